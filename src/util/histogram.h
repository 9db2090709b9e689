/* Prometheus-style cumulative histograms for /metrics (service and server).
 * Not synchronised: the owner guards each histogram with its own lock. */
#ifndef CS_UTIL_HISTOGRAM_H
#define CS_UTIL_HISTOGRAM_H

#include <stdint.h>
#include <stdio.h>

#define CS_HIST_MAX_BUCKETS 20

typedef struct cs_hist {
    const double *bounds; /* upper bounds, ascending; +Inf is implicit */
    int nbounds;
    uint64_t counts[CS_HIST_MAX_BUCKETS + 1]; /* per bucket, not cumulative */
    uint64_t count;
    double sum;
} cs_hist;

/* Latency buckets in seconds (0.25 ms .. 10 s) and batch-size buckets. */
extern const double cs_hist_latency_bounds[];
extern const int cs_hist_latency_nbounds;
extern const double cs_hist_batch_bounds[];
extern const int cs_hist_batch_nbounds;

void cs_hist_init(cs_hist *h, const double *bounds, int nbounds);
void cs_hist_observe(cs_hist *h, double v);
/* Writes name_bucket{labels,le="..."} lines (cumulative), name_sum and
 * name_count.  labels: "" or 'k="v",k2="v2"' without braces. */
void cs_hist_write(FILE *f, const char *name, const char *labels, const cs_hist *h);

#endif
