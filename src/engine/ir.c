/* IR helpers: attribute lookup, shapes, dtype sizes, and the graph walks the
 * CPU planner (plan.c, backward.c) and the CUDA one (cuda_backend.c) share. */
#include "engine/ir.h"

#include <stdio.h>
#include <stdlib.h>
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

cs_status cs_graph_consumers(const cs_graph *g, int *start, int **cons, cs_error *err) {
    int total = 0;
    for (int ni = 0; ni < g->nnodes; ni++) {
        if (g->nodes[ni].dead) continue;
        for (int i = 0; i < g->nodes[ni].ninputs; i++)
            if (g->nodes[ni].inputs[i] >= 0) {
                start[g->nodes[ni].inputs[i] + 1]++;
                total++;
            }
    }
    for (int v = 0; v < g->nvalues; v++) start[v + 1] += start[v];
    int *c = malloc((size_t)(total + 1) * sizeof(int));
    int *fill = calloc((size_t)g->nvalues + 1, sizeof(int));
    if (!c || !fill) {
        free(c);
        free(fill);
        return cs_errorf(err, CS_ENOMEM, "out of memory");
    }
    for (int ni = 0; ni < g->nnodes; ni++) {
        if (g->nodes[ni].dead) continue;
        for (int i = 0; i < g->nodes[ni].ninputs; i++) {
            int v = g->nodes[ni].inputs[i];
            if (v >= 0) c[start[v] + fill[v]++] = ni;
        }
    }
    free(fill);
    *cons = c;
    return CS_OK;
}

cs_status cs_graph_prune_for_override(const cs_graph *g, int ovr_v, const bool *keep, const cs_node **run,
                                      bool *producer_dropped, bool *input_read, cs_error *err) {
    bool *need = calloc((size_t)g->nvalues, sizeof(bool)); /* values a remaining node reads */
    if (!need) return cs_errorf(err, CS_ENOMEM, "out of memory");
    for (int i = 0; i < g->noutputs; i++) need[g->outputs[i]] = true;
    for (int v = 0; v < g->nvalues; v++)
        if (keep[v] && v != ovr_v) need[v] = true;
    bool dropped = false;
    for (int ni = g->nnodes - 1; ni >= 0; ni--) {
        const cs_node *n = run[ni];
        if (!n) continue;
        bool live = false, makes = false;
        for (int o = 0; o < n->noutputs; o++) {
            if (n->outputs[o] == ovr_v) makes = true;
            else if (n->outputs[o] >= 0 && need[n->outputs[o]]) live = true;
        }
        if (!live) {
            run[ni] = NULL;
            dropped |= makes;
            continue;
        }
        for (int i = 0; i < n->ninputs; i++)
            if (n->inputs[i] >= 0) need[n->inputs[i]] = true;
        if (n->sum_input >= 0) need[n->sum_input] = true;
    }
    *producer_dropped = dropped;
    *input_read = need[g->inputs[0]];
    free(need);
    return CS_OK;
}

cs_status cs_graph_grad_region(const cs_graph *g, const int *layers, int nlayers, bool *in_d, bool *in_region,
                               cs_error *err) {
    for (int i = 0; i < nlayers; i++) {
        if (layers[i] < 0 || layers[i] >= g->nvalues)
            return cs_errorf(err, CS_EINVAL, "layer value %d out of range", layers[i]);
        in_d[layers[i]] = true;
    }
    /* forward from the layers: nodes are in topological order */
    for (int ni = 0; ni < g->nnodes; ni++) {
        const cs_node *n = &g->nodes[ni];
        if (n->dead) continue;
        bool hit = false;
        for (int i = 0; i < n->ninputs; i++) hit = hit || (n->inputs[i] >= 0 && in_d[n->inputs[i]]);
        if (!hit) continue;
        in_region[ni] = true;
        for (int o = 0; o < n->noutputs; o++)
            if (n->outputs[o] >= 0) in_d[n->outputs[o]] = true;
    }
    /* back from the output: keep only the nodes the output is reachable from */
    bool *reach = calloc((size_t)g->nvalues, sizeof(bool));
    if (!reach) return cs_errorf(err, CS_ENOMEM, "out of memory");
    reach[g->outputs[0]] = true;
    for (int ni = g->nnodes - 1; ni >= 0; ni--) {
        const cs_node *n = &g->nodes[ni];
        if (!in_region[ni]) continue;
        bool r = false;
        for (int o = 0; o < n->noutputs; o++) r = r || (n->outputs[o] >= 0 && reach[n->outputs[o]]);
        if (!r) {
            in_region[ni] = false;
            continue;
        }
        for (int i = 0; i < n->ninputs; i++)
            if (n->inputs[i] >= 0) reach[n->inputs[i]] = true;
    }
    free(reach);
    if (!in_d[g->outputs[0]]) return cs_errorf(err, CS_EINVAL, "the output does not depend on the target layer");
    return CS_OK;
}

cs_node *cs_graph_unfold_bn(const cs_node *c, cs_arena *a) {
    cs_node *u = cs_arena_alloc(a, sizeof *u);
    int *in = cs_arena_alloc(a, 3 * sizeof(int)), *o1 = cs_arena_alloc(a, sizeof(int));
    if (!u || !in || !o1) return NULL;
    *u = *c;
    in[0] = c->inputs[0];
    in[1] = c->pre_bn_w;
    in[2] = c->pre_bn_b;
    u->inputs = in;
    u->ninputs = c->pre_bn_b >= 0 ? 3 : 2;
    o1[0] = c->pre_bn_out;
    u->outputs = o1;
    u->fold_bn = -1;
    return u;
}
