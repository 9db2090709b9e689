/* A bump allocator for objects that share one lifetime (a graph, a plan).
 * Allocation never fails silently: cs_arena_alloc returns NULL only when
 * malloc does, and callers report CS_ENOMEM.  Everything is freed at once by
 * cs_arena_free. */
#ifndef CS_UTIL_ARENA_H
#define CS_UTIL_ARENA_H

#include <stddef.h>

typedef struct cs_arena_block cs_arena_block;

typedef struct cs_arena {
    cs_arena_block *head;
    size_t total; /* bytes handed out, for inspect/metrics */
} cs_arena;

void *cs_arena_alloc(cs_arena *a, size_t size);  /* 64-byte aligned, zeroed */
char *cs_arena_strdup(cs_arena *a, const char *s);
void *cs_arena_memdup(cs_arena *a, const void *p, size_t size);
void cs_arena_free(cs_arena *a);

#endif
