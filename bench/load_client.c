/* HTTP load client for bench/load.sh (not part of the build; load.sh compiles
 * it with `gcc -O2 -pthread`).  One epoll thread drives C keep-alive
 * connections to a camserve on loopback, each running one POST /v1/explain
 * after another (a closed loop: a client sends its next request when its
 * answer is in).  Requests are of three kinds:
 *
 *   miss     a JPEG from --miss-files, made distinct by a COM segment
 *            "camserve-load <tag> <n>" inserted after SOI (a new SHA-256, so
 *            a new image_id and a full decode), unless --no-tag
 *   hit-up   a re-upload of a file from --hit-files (already cached)
 *   hit-id   {"image_id": ID} for an ID from --hit-ids (already cached)
 *
 * A request is a miss with probability --miss-pct, else a hit (hit-up or
 * hit-id at random when both are given).  The run stops issuing requests after
 * --duration seconds or --requests requests, whichever comes first, then
 * waits up to --grace seconds for the answers in flight.  Throughput counts
 * the answers that arrived within the window.
 *
 * --pid PID samples VmRSS of that process every 0.5 s (from /proc/PID/status)
 * while the run lasts, appending "LABEL SECONDS KB" lines to --rss-out.
 * --out FILE writes one line per request:
 *   kind status client_ms server_total queue decode preprocess inference cam encode cache
 * The summary goes to stdout as key=value lines. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum { K_MISS, K_HIT_UP, K_HIT_ID, NKIND };
static const char *KIND_NAMES[NKIND] = {"miss", "hit_upload", "hit_id"};
enum { T_QUEUE, T_DECODE, T_PREP, T_INFER, T_CAM, T_ENCODE, T_TOTAL, NT };
static const char *T_KEYS[NT] = {"\"queue\":", "\"decode\":", "\"preprocess\":", "\"inference\":",
                                 "\"cam\":", "\"encode\":", "\"total\":"};

typedef struct {
    double t_end;    /* seconds since the start */
    float client_ms; /* first byte sent -> last byte received */
    float t[NT];     /* server timings_ms (-1: none) */
    short status;    /* HTTP status, 0: socket error */
    signed char kind, cache; /* cache: 1 hit, 0 miss, -1 not said */
} rec;

typedef struct {
    uint8_t *data;
    size_t len;
} blob;

typedef struct {
    int fd;
    bool busy, sending;
    int kind, retries;
    long miss_n;
    char hdr[512];
    char pre[96]; /* SOI + COM segment, or the JSON body */
    struct iovec iov[3];
    int niov;
    size_t total_out, sent;
    uint8_t *rbuf;
    size_t rcap, rlen, hlen, need; /* need: header + body length once the header is parsed */
    int status;
    bool close_after;
    double t0;
} conn;

static struct {
    const char *host, *query, *tag, *out, *rss_out, *rss_label;
    int port, clients, pid;
    double duration, grace, miss_pct;
    long max_requests;
    bool no_tag;
    blob *miss, *hitf;
    char (*ids)[65];
    int nmiss, nhitf, nids;
} o = {.host = "127.0.0.1", .query = "", .tag = "t", .rss_label = "run", .clients = 1,
       .duration = 0, .grace = 60, .miss_pct = 0, .max_requests = 0};

static struct timespec t_start;
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t_start.tv_sec) + (double)(t.tv_nsec - t_start.tv_nsec) * 1e-9;
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "load_client: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static blob read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    blob b = {malloc((size_t)n), (size_t)n};
    if (!b.data || fread(b.data, 1, b.len, f) != b.len) die("cannot read %s", path);
    fclose(f);
    return b;
}

/* a list file: one path (or image id) per line */
static char **read_lines(const char *path, int *n) {
    FILE *f = fopen(path, "r");
    if (!f) die("cannot open %s: %s", path, strerror(errno));
    char **v = NULL, line[4096];
    *n = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) continue;
        v = realloc(v, sizeof *v * (size_t)(*n + 1));
        v[(*n)++] = strdup(line);
    }
    fclose(f);
    if (!*n) die("%s is empty", path);
    return v;
}

/* ---- the RSS sampler --------------------------------------------------------------- */

static volatile int sampling = 1;
static long rss_first_kb = -1, rss_peak_kb = -1, rss_last_kb = -1;
static int rss_samples;

static long vmrss_kb(int pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

static void *sampler(void *arg) {
    (void)arg;
    FILE *f = o.rss_out ? fopen(o.rss_out, "a") : NULL;
    while (sampling) {
        long kb = vmrss_kb(o.pid);
        if (kb > 0) {
            if (rss_first_kb < 0) rss_first_kb = kb;
            if (kb > rss_peak_kb) rss_peak_kb = kb;
            rss_last_kb = kb;
            rss_samples++;
            if (f) fprintf(f, "%s %.2f %ld\n", o.rss_label, now(), kb), fflush(f);
        }
        struct timespec ts = {0, 500 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (f) fclose(f);
    return NULL;
}

/* ---- requests ---------------------------------------------------------------------- */

static rec *recs;
static long nrecs, caprecs, started, n_inflight, n_retried, n_sock_err, n_miss_sent;
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double rnd(void) { /* xorshift64*, [0,1) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static int epfd;

static void conn_open(conn *c) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o.port)};
    if (inet_pton(AF_INET, o.host, &a.sin_addr) != 1) die("bad host %s", o.host);
    for (int attempt = 0;; attempt++) {
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0) die("socket: %s", strerror(errno));
        if (connect(c->fd, (struct sockaddr *)&a, sizeof a) == 0) break;
        close(c->fd);
        if (attempt > 50) die("connect to %s:%d: %s", o.host, o.port, strerror(errno));
        usleep(20000);
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev)) die("epoll_ctl: %s", strerror(errno));
}

static void conn_close(conn *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

static void set_out(conn *c, bool want) {
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void try_send(conn *c) {
    while (c->sent < c->total_out) {
        struct iovec v[3];
        int nv = 0;
        size_t skip = c->sent;
        for (int i = 0; i < c->niov; i++) {
            if (skip >= c->iov[i].iov_len) {
                skip -= c->iov[i].iov_len;
                continue;
            }
            v[nv].iov_base = (char *)c->iov[i].iov_base + skip;
            v[nv].iov_len = c->iov[i].iov_len - skip;
            skip = 0;
            nv++;
        }
        ssize_t w = writev(c->fd, v, nv);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!c->sending) set_out(c, true);
                c->sending = true;
                return;
            }
            if (errno == EINTR) continue;
            return; /* the read side sees the reset */
        }
        c->sent += (size_t)w;
    }
    if (c->sending) set_out(c, false);
    c->sending = false;
}

static void build_and_send(conn *c) {
    const char *q = o.query[0] ? "?" : "";
    const void *body = NULL;
    size_t blen = 0;
    c->niov = 0;
    if (c->kind == K_MISS) {
        long n = c->retries ? c->miss_n : (c->miss_n = n_miss_sent++);
        const blob *b = &o.miss[n % o.nmiss];
        if (o.no_tag) {
            c->iov[1] = (struct iovec){b->data, b->len};
            c->niov = 2;
            blen = b->len;
        } else { /* SOI, COM segment, the rest of the file */
            char txt[64];
            int tl = snprintf(txt, sizeof txt, "camserve-load %s %ld", o.tag, n);
            uint8_t *p = (uint8_t *)c->pre;
            p[0] = 0xFF, p[1] = 0xD8, p[2] = 0xFF, p[3] = 0xFE;
            p[4] = (uint8_t)((tl + 2) >> 8), p[5] = (uint8_t)((tl + 2) & 0xFF);
            memcpy(p + 6, txt, (size_t)tl);
            c->iov[1] = (struct iovec){p, (size_t)(6 + tl)};
            c->iov[2] = (struct iovec){b->data + 2, b->len - 2};
            c->niov = 3;
            blen = (size_t)(6 + tl) + b->len - 2;
        }
        body = b;
    } else if (c->kind == K_HIT_UP) {
        const blob *b = &o.hitf[(size_t)(rnd() * o.nhitf)];
        c->iov[1] = (struct iovec){b->data, b->len};
        c->niov = 2;
        blen = b->len;
        body = b;
    } else {
        int l = snprintf(c->pre, sizeof c->pre, "{\"image_id\":\"%s\"}", o.ids[(size_t)(rnd() * o.nids)]);
        c->iov[1] = (struct iovec){c->pre, (size_t)l};
        c->niov = 2;
        blen = (size_t)l;
    }
    (void)body;
    int hl = snprintf(c->hdr, sizeof c->hdr,
                      "POST /v1/explain%s%s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: %s\r\n"
                      "Content-Length: %zu\r\nConnection: keep-alive\r\n\r\n",
                      q, o.query, o.host, o.port, c->kind == K_HIT_ID ? "application/json" : "image/jpeg", blen);
    c->iov[0] = (struct iovec){c->hdr, (size_t)hl};
    c->niov = c->niov ? c->niov : 1;
    c->total_out = (size_t)hl + blen;
    c->sent = 0;
    c->rlen = c->hlen = c->need = 0;
    c->status = 0;
    c->close_after = false;
    c->busy = true;
    c->t0 = now();
    try_send(c);
}

static bool stopping(void) {
    return (o.duration > 0 && now() >= o.duration) || (o.max_requests > 0 && started >= o.max_requests);
}

static void start_next(conn *c) {
    if (stopping()) {
        c->busy = false;
        return;
    }
    c->kind = K_MISS;
    if (!(o.nmiss && rnd() * 100.0 < o.miss_pct)) {
        if (o.nhitf && o.nids) c->kind = rnd() < 0.5 ? K_HIT_UP : K_HIT_ID;
        else if (o.nhitf) c->kind = K_HIT_UP;
        else if (o.nids) c->kind = K_HIT_ID;
        else if (!o.nmiss) die("nothing to send");
    }
    c->retries = 0;
    n_inflight++;
    build_and_send(c);
    started++;
}

static void parse_timings(const conn *c, rec *r) {
    for (int i = 0; i < NT; i++) r->t[i] = -1;
    const char *body = (const char *)c->rbuf + c->hlen;
    size_t blen = c->need - c->hlen;
    /* timings_ms comes near the end of the answer, after the base64 PNGs */
    size_t from = blen > 4096 ? blen - 4096 : 0;
    const char *p = memmem(body + from, blen - from, "\"timings_ms\":{", 14);
    if (!p) p = memmem(body, blen, "\"timings_ms\":{", 14);
    if (p) {
        const char *end = memchr(p, '}', (size_t)(body + blen - p));
        if (!end) end = body + blen;
        for (int i = 0; i < NT; i++) {
            const char *k = memmem(p, (size_t)(end - p), T_KEYS[i], strlen(T_KEYS[i]));
            if (k) r->t[i] = strtof(k + strlen(T_KEYS[i]), NULL);
        }
    }
}

static void finish(conn *c, int status) {
    double t = now();
    if (nrecs == caprecs) {
        caprecs = caprecs ? caprecs * 2 : 65536;
        recs = realloc(recs, sizeof *recs * (size_t)caprecs);
        if (!recs) die("out of memory");
    }
    rec *r = &recs[nrecs++];
    memset(r, 0, sizeof *r);
    r->t_end = t;
    r->client_ms = (float)((t - c->t0) * 1e3);
    r->status = (short)status;
    r->kind = (signed char)c->kind;
    r->cache = -1;
    for (int i = 0; i < NT; i++) r->t[i] = -1;
    if (status > 0) {
        /* X-Cache header */
        const char *h = memmem(c->rbuf, c->hlen, "\r\nX-Cache: ", 11);
        if (h) r->cache = !strncmp(h + 11, "hit", 3);
        if (status == 200) parse_timings(c, r);
    }
    n_inflight--;
}

static void on_error(conn *c) {
    /* The connection failed.  A keep-alive connection the server closed
     * before it read anything is re-sent once on a new connection. */
    bool nothing = c->rlen == 0;
    conn_close(c);
    conn_open(c);
    if (c->busy && nothing && c->retries == 0) {
        c->retries++;
        n_retried++;
        build_and_send(c);
        return;
    }
    if (c->busy) {
        n_sock_err++;
        finish(c, 0);
    }
    start_next(c);
}

static bool parse_header(conn *c) {
    uint8_t *e = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
    if (!e) return false;
    c->hlen = (size_t)(e - c->rbuf) + 4;
    c->rbuf[c->hlen - 1] = '\n';
    if (c->rlen < 12 || memcmp(c->rbuf, "HTTP/1.", 7)) return c->status = -1, true;
    c->status = atoi((char *)c->rbuf + 9);
    size_t cl = 0;
    bool have_cl = false;
    for (char *l = (char *)c->rbuf; l < (char *)c->rbuf + c->hlen;) {
        char *nl = memchr(l, '\n', (size_t)((char *)c->rbuf + c->hlen - l));
        if (!nl) break;
        if (!strncasecmp(l, "Content-Length:", 15)) cl = strtoul(l + 15, NULL, 10), have_cl = true;
        if (!strncasecmp(l, "Connection:", 11) && strcasestr(l, "close") && strcasestr(l, "close") < nl)
            c->close_after = true;
        l = nl + 1;
    }
    if (!have_cl) c->close_after = true, cl = 0; /* not expected from camserve */
    c->need = c->hlen + cl;
    if (c->rcap < c->need + 1) {
        c->rcap = c->need + 1;
        c->rbuf = realloc(c->rbuf, c->rcap);
        if (!c->rbuf) die("out of memory");
    }
    return true;
}

static void on_readable(conn *c) {
    for (;;) {
        if (c->rcap - c->rlen < 65536 && !c->need) {
            c->rcap = c->rcap ? c->rcap * 2 : 262144;
            c->rbuf = realloc(c->rbuf, c->rcap);
            if (!c->rbuf) die("out of memory");
        }
        size_t want = c->need ? c->need - c->rlen : c->rcap - c->rlen - 1;
        if (want == 0) break;
        ssize_t n = read(c->fd, c->rbuf + c->rlen, want);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            on_error(c);
            return;
        }
        if (n == 0) {
            on_error(c);
            return;
        }
        c->rlen += (size_t)n;
        if (!c->need && !parse_header(c)) continue;
        if (c->status < 0) {
            on_error(c);
            return;
        }
        if (c->rlen >= c->need) break;
    }
    if (!c->need || c->rlen < c->need) return;
    /* an answer is complete */
    bool early = c->sent < c->total_out; /* answered before the body was all sent (503, 413) */
    finish(c, c->status);
    if (c->close_after || early) {
        conn_close(c);
        conn_open(c);
    }
    start_next(c);
}

/* ---- statistics -------------------------------------------------------------------- */

static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}
static double pct(float *v, long n, double p) { /* nearest rank */
    if (n <= 0) return -1;
    long k = (long)(p / 100.0 * (double)n + 0.999999) - 1;
    if (k < 0) k = 0;
    if (k >= n) k = n - 1;
    return v[k];
}

/* percentiles of client latency and of server timings over the 200 answers of
 * the kinds in mask; prefix names the keys */
static void report(const char *prefix, int mask, double window) {
    float *cl = malloc(sizeof(float) * (size_t)(nrecs + 1));
    float *tv[NT];
    long ntv[NT] = {0};
    for (int i = 0; i < NT; i++) tv[i] = malloc(sizeof(float) * (size_t)(nrecs + 1));
    long n = 0, ok = 0, s503 = 0, other = 0, in_window = 0, ok_in_window = 0, cache_hit = 0, cache_miss = 0;
    for (long i = 0; i < nrecs; i++) {
        const rec *r = &recs[i];
        if (!(mask & (1 << r->kind))) continue;
        n++;
        if (r->t_end <= window) in_window++;
        if (r->status == 503) s503++;
        else if (r->status != 200) other++;
        if (r->status != 200) continue;
        ok++;
        if (r->t_end <= window) ok_in_window++;
        if (r->cache == 1) cache_hit++;
        if (r->cache == 0) cache_miss++;
        cl[ok - 1] = r->client_ms;
        for (int k = 0; k < NT; k++)
            if (r->t[k] >= 0) tv[k][ntv[k]++] = r->t[k];
    }
    printf("%s_requests=%ld\n%s_ok=%ld\n%s_503=%ld\n%s_other_errors=%ld\n", prefix, n, prefix, ok, prefix, s503,
           prefix, other);
    printf("%s_answered_in_window=%ld\n%s_ok_in_window=%ld\n", prefix, in_window, prefix, ok_in_window);
    printf("%s_rps=%.1f\n%s_ok_rps=%.1f\n", prefix, in_window / window, prefix, ok_in_window / window);
    printf("%s_cache_hit=%ld\n%s_cache_miss=%ld\n", prefix, cache_hit, prefix, cache_miss);
    qsort(cl, (size_t)ok, sizeof *cl, cmpf);
    printf("%s_client_p50_ms=%.2f\n%s_client_p95_ms=%.2f\n%s_client_p99_ms=%.2f\n%s_client_max_ms=%.2f\n", prefix,
           pct(cl, ok, 50), prefix, pct(cl, ok, 95), prefix, pct(cl, ok, 99), prefix, ok ? cl[ok - 1] : -1.0);
    static const char *names[NT] = {"queue", "decode", "preprocess", "inference", "cam", "encode", "total"};
    for (int k = 0; k < NT; k++) {
        qsort(tv[k], (size_t)ntv[k], sizeof(float), cmpf);
        printf("%s_server_%s_p50_ms=%.3f\n", prefix, names[k], pct(tv[k], ntv[k], 50));
        if (k == T_TOTAL || k == T_QUEUE)
            printf("%s_server_%s_p95_ms=%.3f\n%s_server_%s_p99_ms=%.3f\n", prefix, names[k], pct(tv[k], ntv[k], 95),
                   prefix, names[k], pct(tv[k], ntv[k], 99));
        free(tv[k]);
    }
    free(cl);
}

static void usage(void) {
    fprintf(stderr,
            "usage: load_client --port P [--host H] [--clients C] [--duration S] [--requests N] [--grace S]\n"
            "       [--miss-pct X --miss-files LIST [--tag T | --no-tag]] [--hit-files LIST] [--hit-ids LIST]\n"
            "       [--query Q] [--pid PID [--rss-out F] [--rss-label L]] [--out F]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *miss_list = NULL, *hit_list = NULL, *id_list = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (!strcmp(a, name) && v && (i++, 1))
        if (OPT("--host")) o.host = v;
        else if (OPT("--port")) o.port = atoi(v);
        else if (OPT("--clients")) o.clients = atoi(v);
        else if (OPT("--duration")) o.duration = atof(v);
        else if (OPT("--requests")) o.max_requests = atol(v);
        else if (OPT("--grace")) o.grace = atof(v);
        else if (OPT("--miss-pct")) o.miss_pct = atof(v);
        else if (OPT("--miss-files")) miss_list = v;
        else if (OPT("--hit-files")) hit_list = v;
        else if (OPT("--hit-ids")) id_list = v;
        else if (OPT("--tag")) o.tag = v;
        else if (OPT("--query")) o.query = v;
        else if (OPT("--pid")) o.pid = atoi(v);
        else if (OPT("--rss-out")) o.rss_out = v;
        else if (OPT("--rss-label")) o.rss_label = v;
        else if (OPT("--out")) o.out = v;
        else if (!strcmp(a, "--no-tag")) o.no_tag = true;
        else usage();
#undef OPT
    }
    if (o.port <= 0 || o.clients <= 0 || (o.duration <= 0 && o.max_requests <= 0)) usage();
    signal(SIGPIPE, SIG_IGN);
    if (miss_list) {
        char **l = read_lines(miss_list, &o.nmiss);
        o.miss = calloc((size_t)o.nmiss, sizeof *o.miss);
        for (int i = 0; i < o.nmiss; i++) {
            o.miss[i] = read_file(l[i]);
            if (o.miss[i].len < 4 || o.miss[i].data[0] != 0xFF || o.miss[i].data[1] != 0xD8)
                if (!o.no_tag) die("%s is not a JPEG (needed to tag it)", l[i]);
        }
    }
    if (hit_list) {
        char **l = read_lines(hit_list, &o.nhitf);
        o.hitf = calloc((size_t)o.nhitf, sizeof *o.hitf);
        for (int i = 0; i < o.nhitf; i++) o.hitf[i] = read_file(l[i]);
    }
    if (id_list) {
        char **l = read_lines(id_list, &o.nids);
        o.ids = calloc((size_t)o.nids, sizeof *o.ids);
        for (int i = 0; i < o.nids; i++) snprintf(o.ids[i], sizeof o.ids[i], "%.64s", l[i]);
    }
    rng_state ^= (uint64_t)getpid() * 0x2545F4914F6CDD1Dull;

    epfd = epoll_create1(EPOLL_CLOEXEC);
    conn *cs = calloc((size_t)o.clients, sizeof *cs);
    for (int i = 0; i < o.clients; i++) conn_open(&cs[i]);
    clock_gettime(CLOCK_MONOTONIC, &t_start);
    pthread_t th;
    if (o.pid > 0) pthread_create(&th, NULL, sampler, NULL);
    for (int i = 0; i < o.clients; i++) start_next(&cs[i]);

    struct epoll_event evs[256];
    double window = o.duration > 0 ? o.duration : 0, hard_end = 0;
    while (n_inflight > 0) {
        if (stopping()) {
            if (!hard_end) hard_end = now() + o.grace;
            if (now() >= hard_end) break;
        }
        int n = epoll_wait(epfd, evs, 256, 100);
        if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (c->fd < 0) continue;
            if ((evs[i].events & EPOLLOUT) && c->busy && c->sent < c->total_out) try_send(c);
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
        }
    }
    double end = now();
    long abandoned = n_inflight;
    sampling = 0;
    if (o.pid > 0) pthread_join(th, NULL);
    /* the window: --duration, or the time the last answer came in (count-bounded runs) */
    if (window <= 0 || (o.max_requests > 0 && started >= o.max_requests))
        window = nrecs ? recs[nrecs - 1].t_end : end;
    if (window <= 0) window = 1e-9;

    printf("clients=%d\nwindow_s=%.3f\nelapsed_s=%.3f\nstarted=%ld\nanswered=%ld\nabandoned=%ld\nsocket_errors=%ld\n"
           "resent=%ld\n",
           o.clients, window, end, started, nrecs, abandoned, n_sock_err, n_retried);
    report("all", (1 << K_MISS) | (1 << K_HIT_UP) | (1 << K_HIT_ID), window);
    for (int k = 0; k < NKIND; k++) {
        bool any = false;
        for (long i = 0; i < nrecs && !any; i++) any = recs[i].kind == k;
        if (any) report(KIND_NAMES[k], 1 << k, window);
    }
    if (o.pid > 0)
        printf("rss_first_kb=%ld\nrss_peak_kb=%ld\nrss_last_kb=%ld\nrss_samples=%d\n", rss_first_kb, rss_peak_kb,
               rss_last_kb, rss_samples);
    if (o.out) {
        FILE *f = fopen(o.out, "w");
        if (!f) die("cannot write %s", o.out);
        for (long i = 0; i < nrecs; i++) {
            const rec *r = &recs[i];
            fprintf(f, "%s %d %.3f", KIND_NAMES[r->kind], r->status, r->client_ms);
            fprintf(f, " %.3f", r->t[T_TOTAL]);
            for (int k = 0; k < T_TOTAL; k++) fprintf(f, " %.3f", r->t[k]);
            fprintf(f, " %s\n", r->cache == 1 ? "hit" : r->cache == 0 ? "miss" : "-");
        }
        fclose(f);
    }
    return 0;
}
