#include "util/histogram.h"

#include <string.h>

const double cs_hist_latency_bounds[] = {0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                         0.05,    0.1,    0.25,  0.5,    1,     2.5,  5, 10};
const int cs_hist_latency_nbounds = (int)(sizeof cs_hist_latency_bounds / sizeof(double));
const double cs_hist_batch_bounds[] = {1, 2, 4, 8, 16, 32, 64};
const int cs_hist_batch_nbounds = (int)(sizeof cs_hist_batch_bounds / sizeof(double));

void cs_hist_init(cs_hist *h, const double *bounds, int nbounds) {
    memset(h, 0, sizeof *h);
    h->bounds = bounds;
    h->nbounds = nbounds > CS_HIST_MAX_BUCKETS ? CS_HIST_MAX_BUCKETS : nbounds;
}

void cs_hist_observe(cs_hist *h, double v) {
    int i = 0;
    while (i < h->nbounds && v > h->bounds[i]) i++;
    h->counts[i]++;
    h->count++;
    h->sum += v;
}

void cs_hist_write(FILE *f, const char *name, const char *labels, const cs_hist *h) {
    const char *sep = labels && *labels ? "," : "";
    if (!labels) labels = "";
    uint64_t cum = 0;
    for (int i = 0; i <= h->nbounds; i++) {
        cum += h->counts[i];
        if (i < h->nbounds)
            fprintf(f, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, h->bounds[i],
                    (unsigned long long)cum);
        else
            fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)cum);
    }
    if (*labels)
        fprintf(f, "%s_sum{%s} %.9g\n%s_count{%s} %llu\n", name, labels, h->sum, name, labels,
                (unsigned long long)h->count);
    else
        fprintf(f, "%s_sum %.9g\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->count);
}
