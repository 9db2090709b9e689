/* Byte-bounded LRU over 32-byte keys (see service_internal.h).
 *
 * Layout: a chained hash table (power-of-two buckets, grown at load 1) whose
 * nodes are also on one doubly-linked recency list, most recent at the head.
 * Keys are SHA-256 digests: their first 8 bytes are the hash. */
#include "service/service_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct node {
    uint8_t key[32];
    void *value;
    size_t bytes;
    struct node *hnext;        /* bucket chain */
    struct node *prev, *next;  /* recency list */
} node;

struct svc_lru {
    pthread_mutex_t mu;
    size_t max_bytes, bytes, count;
    uint64_t evictions;
    node **buckets;
    size_t nbuckets; /* power of two */
    node *head, *tail;
    svc_lru_ref_fn retain, release;
};

static uint64_t key_hash(const uint8_t *k) {
    uint64_t h;
    memcpy(&h, k, sizeof h);
    return h;
}

svc_lru *svc_lru_create(size_t max_bytes, svc_lru_ref_fn retain, svc_lru_ref_fn release) {
    svc_lru *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->nbuckets = 64;
    l->buckets = calloc(l->nbuckets, sizeof *l->buckets);
    if (!l->buckets) {
        free(l);
        return NULL;
    }
    l->max_bytes = max_bytes;
    l->retain = retain;
    l->release = release;
    pthread_mutex_init(&l->mu, NULL);
    return l;
}

static node **find_slot(svc_lru *l, const uint8_t *key) {
    node **p = &l->buckets[key_hash(key) & (l->nbuckets - 1)];
    while (*p && memcmp((*p)->key, key, 32) != 0) p = &(*p)->hnext;
    return p;
}

static void list_unlink(svc_lru *l, node *n) {
    if (n->prev) n->prev->next = n->next;
    else l->head = n->next;
    if (n->next) n->next->prev = n->prev;
    else l->tail = n->prev;
    n->prev = n->next = NULL;
}

static void list_push_front(svc_lru *l, node *n) {
    n->prev = NULL;
    n->next = l->head;
    if (l->head) l->head->prev = n;
    l->head = n;
    if (!l->tail) l->tail = n;
}

/* Unlinks n from both structures and releases its value. */
static void drop(svc_lru *l, node *n) {
    node **p = find_slot(l, n->key);
    if (*p == n) *p = n->hnext;
    list_unlink(l, n);
    l->bytes -= n->bytes;
    l->count--;
    l->release(n->value);
    free(n);
}

static void grow(svc_lru *l) {
    size_t nb = l->nbuckets * 2;
    node **b = calloc(nb, sizeof *b);
    if (!b) return; /* longer chains, still correct */
    for (size_t i = 0; i < l->nbuckets; i++)
        for (node *n = l->buckets[i], *nx; n; n = nx) {
            nx = n->hnext;
            node **slot = &b[key_hash(n->key) & (nb - 1)];
            n->hnext = *slot;
            *slot = n;
        }
    free(l->buckets);
    l->buckets = b;
    l->nbuckets = nb;
}

void svc_lru_free(svc_lru *l) {
    if (!l) return;
    while (l->tail) drop(l, l->tail);
    free(l->buckets);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

void *svc_lru_get(svc_lru *l, const uint8_t key[32]) {
    void *v = NULL;
    pthread_mutex_lock(&l->mu);
    node *n = *find_slot(l, key);
    if (n) {
        list_unlink(l, n);
        list_push_front(l, n);
        l->retain(n->value);
        v = n->value;
    }
    pthread_mutex_unlock(&l->mu);
    return v;
}

int svc_lru_put(svc_lru *l, const uint8_t key[32], void *value, size_t bytes) {
    if (bytes > l->max_bytes) return 0;
    node *nn = malloc(sizeof *nn);
    if (!nn) return 0;
    memcpy(nn->key, key, 32);
    nn->value = value;
    nn->bytes = bytes;
    l->retain(value);
    pthread_mutex_lock(&l->mu);
    node *old = *find_slot(l, key);
    if (old) drop(l, old);
    while (l->tail && l->bytes + bytes > l->max_bytes) {
        drop(l, l->tail);
        l->evictions++;
    }
    if (l->count + 1 > l->nbuckets) grow(l);
    node **slot = find_slot(l, key);
    nn->hnext = *slot;
    *slot = nn;
    list_push_front(l, nn);
    l->bytes += bytes;
    l->count++;
    pthread_mutex_unlock(&l->mu);
    return 1;
}

void svc_lru_stats(svc_lru *l, size_t *bytes, size_t *entries, uint64_t *evictions) {
    pthread_mutex_lock(&l->mu);
    if (bytes) *bytes = l->bytes;
    if (entries) *entries = l->count;
    if (evictions) *evictions = l->evictions;
    pthread_mutex_unlock(&l->mu);
}

size_t svc_lru_remove_if(svc_lru *l, int (*drop_fn)(void *ctx, void *value), void *ctx) {
    size_t n = 0;
    pthread_mutex_lock(&l->mu);
    for (node *x = l->head, *nx; x; x = nx) {
        nx = x->next;
        if (drop_fn(ctx, x->value)) {
            drop(l, x);
            n++;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return n;
}
