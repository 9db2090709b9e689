/* IR helpers: attribute lookup, shapes, dtype sizes. */
#include "engine/ir.h"

#include <stdio.h>
#include <string.h>

size_t cs_dtype_size(cs_dtype dt) {
    switch (dt) {
    case CS_DT_FLOAT: return 4;
    case CS_DT_UINT8: return 1;
    case CS_DT_INT8: return 1;
    case CS_DT_INT32: return 4;
    case CS_DT_INT64: return 8;
    case CS_DT_BOOL: return 1;
    case CS_DT_DOUBLE: return 8;
    default: return 0;
    }
}

int64_t cs_shape_numel(const cs_shape *s) {
    if (s->ndim < 0) return -1;
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) {
        if (s->dims[i] < 0) return -1;
        n *= s->dims[i];
    }
    return n;
}

bool cs_shape_equal(const cs_shape *a, const cs_shape *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->dims[i] != b->dims[i]) return false;
    return true;
}

const char *cs_shape_str(const cs_shape *s, char *buf, size_t len) {
    size_t off = 0;
    buf[0] = '\0';
    if (s->ndim < 0) {
        snprintf(buf, len, "?");
        return buf;
    }
    if (s->ndim == 0) {
        snprintf(buf, len, "scalar");
        return buf;
    }
    for (int i = 0; i < s->ndim && off < len; i++) {
        int n = s->dims[i] < 0 ? snprintf(buf + off, len - off, "%sN", i ? "x" : "")
                               : snprintf(buf + off, len - off, "%s%lld", i ? "x" : "",
                                          (long long)s->dims[i]);
        if (n < 0) break;
        off += (size_t)n;
    }
    return buf;
}

const cs_attr *cs_node_attr(const cs_node *n, const char *name) {
    for (int i = 0; i < n->nattrs; i++)
        if (strcmp(n->attrs[i].name, name) == 0) return &n->attrs[i];
    return NULL;
}

int64_t cs_attr_int(const cs_node *n, const char *name, int64_t def) {
    const cs_attr *a = cs_node_attr(n, name);
    return (a && a->type == CS_ATTR_INT) ? a->i : def;
}

float cs_attr_float(const cs_node *n, const char *name, float def) {
    const cs_attr *a = cs_node_attr(n, name);
    if (!a) return def;
    if (a->type == CS_ATTR_FLOAT) return a->f;
    if (a->type == CS_ATTR_INT) return (float)a->i;
    return def;
}

const char *cs_attr_string(const cs_node *n, const char *name, const char *def) {
    const cs_attr *a = cs_node_attr(n, name);
    return (a && a->type == CS_ATTR_STRING) ? a->s : def;
}

int cs_attr_ints(const cs_node *n, const char *name, const int64_t **out) {
    const cs_attr *a = cs_node_attr(n, name);
    if (!a || a->type != CS_ATTR_INTS) {
        *out = NULL;
        return 0;
    }
    *out = a->ints;
    return a->n;
}

int cs_graph_find_value(const cs_graph *g, const char *name) {
    for (int i = 0; i < g->nvalues; i++)
        if (strcmp(g->values[i].name, name) == 0) return i;
    return -1;
}
