/* camserve HTTP server: libmicrohttpd in front of the service (service.h).
 *
 * The server parses requests, hands them to the service and formats the
 * answers; it knows nothing about queues or caches.  libmicrohttpd runs a
 * small pool of epoll threads; none of them ever waits for inference: a
 * request that is queued suspends its connection, and the service's
 * completion callback resumes it.  Slow or vanished clients therefore cost a
 * socket and a bounded buffer, never a thread.
 *
 * Endpoints (docs/api.md): GET / and the embedded web UI, POST /v1/explain,
 * POST /v1/classify, GET /v1/models, GET /healthz, GET /readyz, GET /metrics,
 * DELETE /v1/cache.
 *
 * Thread-safety: cs_http_start / cs_http_stop / cs_http_free from one
 * thread; cs_http_port and cs_http_active from any. */
#ifndef CAMSERVE_SERVER_H
#define CAMSERVE_SERVER_H

#include "camserve/service.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cs_http cs_http;

typedef struct cs_http_params {
    const char *host;          /* numeric IPv4/IPv6 address; default "127.0.0.1" */
    int port;                  /* 0: any free port (see cs_http_port); default 8080 */
    int threads;               /* libmicrohttpd epoll threads (default 2) */
    int max_connections;       /* default 512 */
    int connection_timeout_s;  /* idle / slow client timeout (default 30) */
    size_t max_upload_bytes;   /* body cap, 413 beyond (default 25 MB) */
    /* Request bodies held by all connections together, from the first byte
     * until the answer is sent; an upload that would pass it gets 503 with
     * Retry-After, so memory does not grow with the number of clients
     * (default 64 MB; never below max_upload_bytes). */
    size_t inflight_bytes;
    int retry_after_s;         /* Retry-After of 503 answers (default 1) */
    int access_log;            /* one line per request on stderr */
} cs_http_params;

cs_http_params cs_http_default_params(void);

/* Starts listening.  svc is borrowed and must outlive the server; it may
 * still be loading models (GET /readyz answers 503 until cs_svc_ready). */
cs_status cs_http_start(cs_svc *svc, const cs_http_params *p, cs_http **out, cs_error *err);
/* The port actually bound. */
int cs_http_port(const cs_http *h);
/* Requests received and not yet fully answered. */
int cs_http_active(const cs_http *h);
/* Stops accepting connections; those already open keep being served. */
void cs_http_quiesce(cs_http *h);
/* Waits up to drain_ms for active requests to finish (the service must be
 * drained first, see cs_svc_stop), then closes everything.  Idempotent. */
void cs_http_stop(cs_http *h, int drain_ms);
/* Stops if needed and frees; NULL is a no-op. */
void cs_http_free(cs_http *h);

#ifdef __cplusplus
}
#endif
#endif
