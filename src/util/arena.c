#include "util/arena.h"

#include <stdlib.h>
#include <string.h>

struct cs_arena_block {
    cs_arena_block *next;
    size_t used, cap;
    _Alignas(64) unsigned char data[];
};

#define ARENA_MIN_BLOCK (64 * 1024)

void *cs_arena_alloc(cs_arena *a, size_t size) {
    size = (size + 63) & ~(size_t)63;
    if (size == 0) size = 64;
    cs_arena_block *b = a->head;
    if (!b || b->cap - b->used < size) {
        size_t cap = size > ARENA_MIN_BLOCK ? size : ARENA_MIN_BLOCK;
        b = aligned_alloc(64, (sizeof *b + cap + 63) & ~(size_t)63);
        if (!b) return NULL;
        b->cap = cap;
        b->used = 0;
        /* A big one-off block goes behind the head so the head's free tail
         * stays usable for small allocations. */
        if (a->head && cap == size) {
            b->next = a->head->next;
            a->head->next = b;
        } else {
            b->next = a->head;
            a->head = b;
        }
    }
    void *p = b->data + b->used;
    b->used += size;
    a->total += size;
    memset(p, 0, size);
    return p;
}

char *cs_arena_strdup(cs_arena *a, const char *s) {
    if (!s) s = "";
    return cs_arena_memdup(a, s, strlen(s) + 1);
}

void *cs_arena_memdup(cs_arena *a, const void *p, size_t size) {
    void *q = cs_arena_alloc(a, size);
    if (q && size) memcpy(q, p, size);
    return q;
}

void cs_arena_free(cs_arena *a) {
    cs_arena_block *b = a->head;
    while (b) {
        cs_arena_block *n = b->next;
        free(b);
        b = n;
    }
    a->head = NULL;
    a->total = 0;
}
