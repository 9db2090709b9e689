/* The prepared-model cache: a loaded model (folded graph + weights packed
 * for this CPU) written to disk once, so that the next start maps it back
 * instead of parsing, folding and reordering again.
 *
 * An entry is one file, <dir>/<key>.csm, where key = SHA-256 over the
 * model file's identity (real path, device, inode, size, mtime in ns), the
 * engine version, the oneDNN version and the CPU ISA oneDNN uses.  A model
 * file that changes gets a new key; entries of other machines or versions
 * are never looked at.  The entry carries the model's own SHA-256 digest
 * (so a service need not hash the file again) and an XXH3-128 checksum of
 * its payload, checked on every load: a truncated, corrupt or foreign entry
 * is ignored and rewritten, never trusted.  The checksum guards against
 * accidents (a torn write, a bad disk), not against someone who can write
 * the cache directory -- they could replace the entry wholesale -- so it
 * need not be cryptographic; XXH3 checks ResNet-50's 205 MB entry at memory
 * speed, where SHA-256 took ~115 ms of a ~150 ms restart.  Writes go to a temporary file that is
 * renamed into place, so a crash leaves either the old entry or none.
 *
 * Layout: header, then a payload of aligned sections addressed by offsets
 * from the payload start.  The graph's structs are rebuilt in its arena;
 * constant data and packed weights stay in the mapping, which the model
 * keeps open for its lifetime. */
#include "engine/engine_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define PREP_MAGIC "CSPREP02"
#define PREP_FORMAT 2

typedef struct prep_header {
    char magic[8];
    uint32_t format, isa;
    char engine[32];
    uint8_t onnx_digest[32];
    uint8_t payload_sum[16]; /* XXH3-128 of the payload, canonical (big-endian) form */
    uint8_t pad[16];
    uint64_t payload_len;
    int64_t num_params;
    int32_t num_nodes, opset;
    uint8_t reserved[120]; /* header = 256 bytes: the payload stays 64-byte aligned */
} prep_header;
_Static_assert(sizeof(prep_header) == 256, "prepared-model header size");

/* ---- hashing ------------------------------------------------------------------ */

int cs_sha256(const void *buf, size_t len, uint8_t out[32]) {
    unsigned int n = 0;
    return EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32;
}

static void payload_sum(const void *p, size_t n, uint8_t out[16]) {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(p, n));
    memcpy(out, c.digest, 16);
}

/* ---- writer ------------------------------------------------------------------- */

typedef struct wbuf {
    unsigned char *p;
    size_t len, cap;
    bool oom;
} wbuf;

static uint64_t put(wbuf *w, const void *src, size_t n, size_t align) {
    size_t off = (w->len + align - 1) & ~(align - 1);
    if (off + n > w->cap) {
        size_t cap = w->cap ? w->cap : 1 << 20;
        while (cap < off + n) cap *= 2;
        unsigned char *q = realloc(w->p, cap);
        if (!q) {
            w->oom = true;
            return 0;
        }
        w->p = q;
        w->cap = cap;
    }
    memset(w->p + w->len, 0, off - w->len);
    if (n) memcpy(w->p + off, src, n);
    w->len = off + n;
    return off;
}

static uint64_t put_str(wbuf *w, const char *s) { return put(w, s ? s : "", strlen(s ? s : "") + 1, 1); }

/* On-disk forms of the IR structs: offsets instead of pointers. */
typedef struct dvalue {
    uint64_t name, data, data_len;
    cs_shape shape;
    int32_t producer, nconsumers, is_in, is_out;
} dvalue;

typedef struct dattr {
    uint64_t name, s, ints, floats;
    int32_t type, n, tensor, pad;
    float f;
    int64_t i;
} dattr;

typedef struct dnode {
    uint64_t name, op_type, inputs, outputs, attrs;
    int32_t op, ninputs, noutputs, nattrs, dead, sum_input, nfused;
    cs_fused_act fused[CS_MAX_FUSED];
    int32_t fold_bn, pre_bn_w, pre_bn_b, pre_bn_out;
} dnode;

typedef struct dpacked {
    dnnl_memory_desc_t md;
    uint64_t data, len;
} dpacked;

typedef struct dgraph {
    int32_t nvalues, nnodes, ninputs, noutputs, nmeta, pad;
    int64_t opset;
    uint64_t values, nodes, inputs, outputs, meta_keys, meta_values, packed, producer;
} dgraph;

static void engine_id(const cs_model *m, char out[32]) {
    const dnnl_version_t *v = dnnl_version();
    /* the packed weights' layouts depend on the convolution algorithm, their
     * type on the precision */
    snprintf(out, 32, "cs%s-dnnl%d.%d.%d%s%s", CS_VERSION, v->major, v->minor, v->patch,
             cs_engine_winograd() ? "-w" : "", cs_model_cpu_bf16(m) ? "-bf16" : "");
}

static cs_status serialize(const cs_model *m, wbuf *w) {
    const cs_graph *g = &m->g;
    dgraph dg = {.nvalues = g->nvalues, .nnodes = g->nnodes, .ninputs = g->ninputs,
                 .noutputs = g->noutputs, .nmeta = g->nmeta, .opset = g->opset};
    put(w, &dg, sizeof dg, 64); /* at offset 0: rewritten at the end */
    dg.producer = put_str(w, g->producer_name);
    dvalue *dv = calloc((size_t)g->nvalues + 1, sizeof *dv);
    dnode *dn = calloc((size_t)g->nnodes + 1, sizeof *dn);
    dpacked *dp = calloc((size_t)g->nnodes + 1, sizeof *dp);
    if (!dv || !dn || !dp) {
        free(dv), free(dn), free(dp);
        return CS_ENOMEM;
    }
    for (int v = 0; v < g->nvalues; v++) {
        const cs_value *cv = &g->values[v];
        dv[v] = (dvalue){.name = put_str(w, cv->name), .shape = cv->shape, .producer = cv->producer,
                         .nconsumers = cv->nconsumers, .is_in = cv->is_graph_input,
                         .is_out = cv->is_graph_output};
        if (cv->data) {
            int64_t ne = cs_shape_numel(&cv->shape);
            size_t bytes = (size_t)(ne > 0 ? ne : 0) * cs_dtype_size(cv->shape.dtype);
            dv[v].data = put(w, cv->data, bytes, 64);
            dv[v].data_len = bytes + 1; /* +1: zero-size constants still have data */
        }
    }
    for (int ni = 0; ni < g->nnodes; ni++) {
        const cs_node *n = &g->nodes[ni];
        dattr *da = calloc((size_t)n->nattrs + 1, sizeof *da);
        if (!da) {
            free(dv), free(dn), free(dp);
            return CS_ENOMEM;
        }
        for (int a = 0; a < n->nattrs; a++) {
            const cs_attr *at = &n->attrs[a];
            da[a] = (dattr){.name = put_str(w, at->name), .type = at->type, .n = at->n,
                            .tensor = at->tensor, .f = at->f, .i = at->i};
            if (at->type == CS_ATTR_STRING) da[a].s = put_str(w, at->s);
            if (at->type == CS_ATTR_INTS) da[a].ints = put(w, at->ints, (size_t)at->n * 8, 8);
            if (at->type == CS_ATTR_FLOATS) da[a].floats = put(w, at->floats, (size_t)at->n * 4, 4);
        }
        dn[ni] = (dnode){.name = put_str(w, n->name), .op_type = put_str(w, n->op_type),
                         .inputs = put(w, n->inputs, (size_t)n->ninputs * 4, 4),
                         .outputs = put(w, n->outputs, (size_t)n->noutputs * 4, 4),
                         .attrs = put(w, da, (size_t)n->nattrs * sizeof *da, 8), .op = n->op,
                         .ninputs = n->ninputs, .noutputs = n->noutputs, .nattrs = n->nattrs,
                         .dead = n->dead, .sum_input = n->sum_input, .nfused = n->nfused,
                         .fold_bn = n->fold_bn, .pre_bn_w = n->pre_bn_w, .pre_bn_b = n->pre_bn_b,
                         .pre_bn_out = n->pre_bn_out};
        memcpy(dn[ni].fused, n->fused, sizeof n->fused);
        free(da);
        if (m->packed[ni].data) {
            size_t len = dnnl_memory_desc_get_size(&m->packed[ni].md);
            dp[ni] = (dpacked){.md = m->packed[ni].md, .data = put(w, m->packed[ni].data, len, 64),
                               .len = len};
        }
    }
    dg.values = put(w, dv, (size_t)g->nvalues * sizeof *dv, 64);
    dg.nodes = put(w, dn, (size_t)g->nnodes * sizeof *dn, 64);
    dg.packed = put(w, dp, (size_t)g->nnodes * sizeof *dp, 64);
    dg.inputs = put(w, g->inputs, (size_t)g->ninputs * 4, 4);
    dg.outputs = put(w, g->outputs, (size_t)g->noutputs * 4, 4);
    uint64_t *mk = calloc((size_t)g->nmeta + 1, 8), *mv = calloc((size_t)g->nmeta + 1, 8);
    if (mk && mv)
        for (int i = 0; i < g->nmeta; i++) {
            mk[i] = put_str(w, g->meta_keys[i]);
            mv[i] = put_str(w, g->meta_values[i]);
        }
    dg.meta_keys = put(w, mk, (size_t)g->nmeta * 8, 8);
    dg.meta_values = put(w, mv, (size_t)g->nmeta * 8, 8);
    free(mk), free(mv), free(dv), free(dn), free(dp);
    if (w->oom || !mk || !mv) return CS_ENOMEM;
    memcpy(w->p, &dg, sizeof dg);
    return CS_OK;
}

/* ---- reader ------------------------------------------------------------------- */

typedef struct rctx {
    const unsigned char *base;
    size_t len;
    bool bad;
} rctx;

static const void *at(rctx *r, uint64_t off, uint64_t n) {
    if (off > r->len || n > r->len - off) {
        r->bad = true;
        return NULL;
    }
    return r->base + off;
}

static const char *str_at(rctx *r, uint64_t off) {
    const char *s = at(r, off, 1);
    if (!s) return "";
    if (!memchr(s, 0, r->len - off)) {
        r->bad = true;
        return "";
    }
    return s;
}

static bool idx_ok(rctx *r, int v, int n) {
    if (v < -1 || v >= n) r->bad = true;
    return !r->bad;
}

static cs_status deserialize(cs_model *m, const unsigned char *payload, size_t len, cs_error *err) {
    rctx r = {payload, len, false};
    cs_graph *g = &m->g;
    memset(g, 0, sizeof *g);
    const dgraph *dg = at(&r, 0, sizeof(dgraph));
    if (!dg || dg->nvalues < 1 || dg->nnodes < 0 || dg->ninputs < 1 || dg->noutputs < 1 ||
        dg->nmeta < 0)
        return cs_errorf(err, CS_EFORMAT, "prepared model: bad graph header");
    const dvalue *dv = at(&r, dg->values, (uint64_t)dg->nvalues * sizeof(dvalue));
    const dnode *dn = at(&r, dg->nodes, (uint64_t)dg->nnodes * sizeof(dnode));
    const dpacked *dp = at(&r, dg->packed, (uint64_t)dg->nnodes * sizeof(dpacked));
    const int32_t *gin = at(&r, dg->inputs, (uint64_t)dg->ninputs * 4);
    const int32_t *gout = at(&r, dg->outputs, (uint64_t)dg->noutputs * 4);
    const uint64_t *mk = at(&r, dg->meta_keys, (uint64_t)dg->nmeta * 8);
    const uint64_t *mv = at(&r, dg->meta_values, (uint64_t)dg->nmeta * 8);
    if (r.bad) return cs_errorf(err, CS_EFORMAT, "prepared model: section out of bounds");
    g->nvalues = dg->nvalues;
    g->nnodes = dg->nnodes;
    g->ninputs = dg->ninputs;
    g->noutputs = dg->noutputs;
    g->nmeta = dg->nmeta;
    g->opset = dg->opset;
    g->producer_name = str_at(&r, dg->producer);
    g->values = cs_arena_alloc(&g->arena, (size_t)g->nvalues * sizeof(cs_value));
    g->nodes = cs_arena_alloc(&g->arena, ((size_t)g->nnodes + 1) * sizeof(cs_node));
    g->inputs = cs_arena_memdup(&g->arena, gin, (size_t)g->ninputs * 4);
    g->outputs = cs_arena_memdup(&g->arena, gout, (size_t)g->noutputs * 4);
    g->meta_keys = cs_arena_alloc(&g->arena, ((size_t)g->nmeta + 1) * sizeof(char *));
    g->meta_values = cs_arena_alloc(&g->arena, ((size_t)g->nmeta + 1) * sizeof(char *));
    m->packed = calloc((size_t)g->nnodes + 1, sizeof(cs_packed));
    if (!g->values || !g->nodes || !g->inputs || !g->outputs || !g->meta_keys || !g->meta_values ||
        !m->packed)
        return cs_errorf(err, CS_ENOMEM, "out of memory");
    for (int i = 0; i < g->ninputs; i++) idx_ok(&r, g->inputs[i], g->nvalues);
    for (int i = 0; i < g->noutputs; i++) idx_ok(&r, g->outputs[i], g->nvalues);
    for (int i = 0; i < g->nmeta; i++) {
        g->meta_keys[i] = str_at(&r, mk[i]);
        g->meta_values[i] = str_at(&r, mv[i]);
    }
    for (int v = 0; v < g->nvalues; v++) {
        cs_value *cv = &g->values[v];
        cv->name = str_at(&r, dv[v].name);
        cv->shape = dv[v].shape;
        if (cv->shape.ndim > CS_MAX_DIMS) r.bad = true;
        cv->producer = dv[v].producer;
        cv->nconsumers = dv[v].nconsumers;
        cv->is_graph_input = dv[v].is_in;
        cv->is_graph_output = dv[v].is_out;
        idx_ok(&r, cv->producer, g->nnodes);
        if (dv[v].data_len) cv->data = (void *)at(&r, dv[v].data, dv[v].data_len - 1);
    }
    for (int ni = 0; ni < g->nnodes && !r.bad; ni++) {
        const dnode *d = &dn[ni];
        cs_node *n = &g->nodes[ni];
        if (d->ninputs < 0 || d->noutputs < 1 || d->nattrs < 0 || d->op <= 0 || d->op >= CS_OP__COUNT ||
            d->nfused < 0 || d->nfused > CS_MAX_FUSED) {
            r.bad = true;
            break;
        }
        n->op = (cs_op)d->op;
        n->name = str_at(&r, d->name);
        n->op_type = str_at(&r, d->op_type);
        n->ninputs = d->ninputs;
        n->noutputs = d->noutputs;
        n->nattrs = d->nattrs;
        n->dead = d->dead;
        n->sum_input = d->sum_input;
        n->nfused = d->nfused;
        memcpy(n->fused, d->fused, sizeof n->fused);
        n->fold_bn = d->fold_bn;
        n->pre_bn_w = d->pre_bn_w;
        n->pre_bn_b = d->pre_bn_b;
        n->pre_bn_out = d->pre_bn_out;
        /* +1: BN folding may give a Conv a third input */
        n->inputs = cs_arena_alloc(&g->arena, ((size_t)n->ninputs + 1) * 4);
        n->outputs = cs_arena_alloc(&g->arena, (size_t)n->noutputs * 4);
        n->attrs = cs_arena_alloc(&g->arena, ((size_t)n->nattrs + 1) * sizeof(cs_attr));
        const int32_t *in = at(&r, d->inputs, (uint64_t)n->ninputs * 4);
        const int32_t *out = at(&r, d->outputs, (uint64_t)n->noutputs * 4);
        const dattr *da = at(&r, d->attrs, (uint64_t)n->nattrs * sizeof(dattr));
        if (!n->inputs || !n->outputs || !n->attrs) return cs_errorf(err, CS_ENOMEM, "out of memory");
        if (r.bad) break;
        for (int i = 0; i < n->ninputs; i++) {
            n->inputs[i] = in[i];
            idx_ok(&r, in[i], g->nvalues);
        }
        for (int i = 0; i < n->noutputs; i++) {
            n->outputs[i] = out[i];
            idx_ok(&r, out[i], g->nvalues);
        }
        idx_ok(&r, n->fold_bn, g->nnodes);
        idx_ok(&r, n->sum_input, g->nvalues);
        if (n->fold_bn >= 0) {
            idx_ok(&r, n->pre_bn_w, g->nvalues);
            idx_ok(&r, n->pre_bn_b, g->nvalues);
            idx_ok(&r, n->pre_bn_out, g->nvalues);
        }
        for (int a = 0; a < n->nattrs && !r.bad; a++) {
            cs_attr *t = &n->attrs[a];
            t->name = str_at(&r, da[a].name);
            t->type = (cs_attr_type)da[a].type;
            t->f = da[a].f;
            t->i = da[a].i;
            t->n = da[a].n;
            t->tensor = da[a].tensor;
            if (t->n < 0) r.bad = true;
            if (t->type == CS_ATTR_STRING) t->s = str_at(&r, da[a].s);
            if (t->type == CS_ATTR_INTS) t->ints = (int64_t *)at(&r, da[a].ints, (uint64_t)t->n * 8);
            if (t->type == CS_ATTR_FLOATS) t->floats = (float *)at(&r, da[a].floats, (uint64_t)t->n * 4);
            if (t->type == CS_ATTR_TENSOR) idx_ok(&r, t->tensor, g->nvalues);
        }
        if (dp[ni].len) {
            m->packed[ni].md = dp[ni].md;
            m->packed[ni].data = (void *)at(&r, dp[ni].data, dp[ni].len);
            if (dnnl_memory_desc_get_size(&dp[ni].md) != dp[ni].len) r.bad = true;
        }
    }
    if (r.bad) return cs_errorf(err, CS_EFORMAT, "prepared model: inconsistent contents");
    return CS_OK;
}

/* ---- files ---------------------------------------------------------------------- */

static cs_status entry_path(const char *dir, const char *model_path, const cs_model *m, char *out,
                            size_t len, cs_error *err) {
    struct stat sb;
    char real[4096];
    if (!realpath(model_path, real) || stat(real, &sb) != 0)
        return cs_errorf(err, CS_EIO, "cannot stat %s", model_path);
    char id[4096 + 256], eng[32];
    engine_id(m, eng);
    int n = snprintf(id, sizeof id, "%s|%llu|%llu|%lld|%lld.%09ld|%s|isa%d", real,
                     (unsigned long long)sb.st_dev, (unsigned long long)sb.st_ino,
                     (long long)sb.st_size, (long long)sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec, eng,
                     (int)dnnl_get_effective_cpu_isa());
    uint8_t h[32], hp[32];
    /* the prefix: the path and the precision, so that a bf16 and an fp32
     * entry of one file (two replicas) do not retire each other */
    size_t rl = strlen(real);
    if (cs_model_cpu_bf16(m) && rl + 6 < sizeof real) memcpy(real + rl, "|bf16", 6);
    if (n < 0 || !cs_sha256(id, (size_t)n, h) || !cs_sha256(real, strlen(real), hp))
        return cs_errorf(err, CS_EINTERNAL, "hashing failed");
    /* <16 hex of the prefix>-<64 hex of the key>.csm: entries of one model
     * file share the prefix, so a new one can retire the old ones */
    char hex[65], phex[17];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", h[i]);
    for (int i = 0; i < 8; i++) snprintf(phex + 2 * i, 3, "%02x", hp[i]);
    if ((size_t)snprintf(out, len, "%s/%s-%s.csm", dir, phex, hex) >= len)
        return cs_errorf(err, CS_EINVAL, "cache path too long");
    return CS_OK;
}

/* Removes the entries of the same model file other than `keep` (the file
 * changed since, or the engine was upgraded): they would never be read. */
static void retire_others(const char *dir, const char *keep) {
    const char *base = strrchr(keep, '/');
    base = base ? base + 1 : keep;
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, base, 17) != 0 || strcmp(e->d_name, base) == 0) continue;
        char p[4096];
        if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < sizeof p) unlink(p);
    }
    closedir(d);
}

cs_status cs_prepared_load(const char *dir, const char *model_path, cs_model *m, cs_error *err) {
    char path[4096];
    cs_status st = entry_path(dir, model_path, m, path, sizeof path, err);
    if (st != CS_OK) return st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cs_errorf(err, CS_ENOTFOUND, "no prepared entry");
    struct stat sb;
    void *map = MAP_FAILED;
    if (fstat(fd, &sb) == 0 && (size_t)sb.st_size > sizeof(prep_header))
        map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return cs_errorf(err, CS_EFORMAT, "prepared entry unreadable");
    const prep_header *h = map;
    char eng[32];
    engine_id(m, eng);
    uint8_t sum[16];
    size_t plen = (size_t)sb.st_size - sizeof *h;
    const unsigned char *payload = (const unsigned char *)map + sizeof *h;
    if (memcmp(h->magic, PREP_MAGIC, 8) != 0 || h->format != PREP_FORMAT ||
        h->isa != (uint32_t)dnnl_get_effective_cpu_isa() || strncmp(h->engine, eng, 32) != 0 ||
        h->payload_len != plen || (payload_sum(payload, plen, sum), memcmp(sum, h->payload_sum, 16) != 0)) {
        munmap(map, (size_t)sb.st_size);
        return cs_errorf(err, CS_EFORMAT, "prepared entry %s is stale or corrupt", path);
    }
    st = deserialize(m, payload, plen, err);
    if (st != CS_OK) {
        cs_arena_free(&m->g.arena);
        memset(&m->g, 0, sizeof m->g);
        free(m->packed);
        m->packed = NULL;
        munmap(map, (size_t)sb.st_size);
        return st;
    }
    m->prep_map = map;
    m->prep_len = (size_t)sb.st_size;
    memcpy(m->digest, h->onnx_digest, 32);
    m->have_digest = true;
    m->info.num_params = h->num_params;
    m->info.num_nodes = h->num_nodes;
    m->info.opset = h->opset;
    return CS_OK;
}

cs_status cs_prepared_store(const char *dir, const char *model_path, const cs_model *m,
                            cs_error *err) {
    char path[4096], tmp[4200];
    cs_status st = entry_path(dir, model_path, m, path, sizeof path, err);
    if (st != CS_OK) return st;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return cs_errorf(err, CS_EIO, "cannot create %s: %s", dir, strerror(errno));
    wbuf w = {0};
    st = serialize(m, &w);
    if (st != CS_OK) {
        free(w.p);
        return cs_errorf(err, st, "out of memory writing the prepared model");
    }
    prep_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, PREP_MAGIC, 8);
    h.format = PREP_FORMAT;
    h.isa = (uint32_t)dnnl_get_effective_cpu_isa();
    engine_id(m, h.engine);
    memcpy(h.onnx_digest, m->digest, 32);
    h.payload_len = w.len;
    h.num_params = m->info.num_params;
    h.num_nodes = m->info.num_nodes;
    h.opset = m->info.opset;
    payload_sum(w.p, w.len, h.payload_sum);
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    bool ok = f && fwrite(&h, sizeof h, 1, f) == 1 && fwrite(w.p, 1, w.len, f) == w.len;
    if (f && fflush(f) != 0) ok = false;
    if (f && fsync(fileno(f)) != 0) ok = false;
    if (f && fclose(f) != 0) ok = false;
    free(w.p);
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return cs_errorf(err, CS_EIO, "cannot write %s", path);
    }
    retire_others(dir, path);
    return CS_OK;
}
