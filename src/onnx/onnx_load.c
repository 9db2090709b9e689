/* ONNX loader.  protobuf-c does the wire format; this file maps the message
 * tree onto the IR, copying everything it keeps into the graph's arena so the
 * protobuf tree can be freed as soon as parsing ends. */
#include "onnx/onnx_load.h"

#include "onnx/onnx.pb-c.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Open-addressing name → value index map, used only while loading.  Graphs
 * have thousands of names; a linear search per node input would be
 * quadratic. */
typedef struct name_map {
    size_t cap;
    const char **keys;
    int *vals;
} name_map;

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a: fine for a private table */
    while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static int map_init(name_map *m, size_t n) {
    m->cap = 64;
    while (m->cap < 2 * n + 16) m->cap <<= 1;
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->vals = calloc(m->cap, sizeof *m->vals);
    return m->keys && m->vals;
}

static void map_free(name_map *m) {
    free(m->keys);
    free(m->vals);
}

static int map_get(const name_map *m, const char *k) {
    for (size_t i = hash_str(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->keys[i]) return -1;
        if (strcmp(m->keys[i], k) == 0) return m->vals[i];
    }
}

/* Later definitions of the same name win: ONNX forbids redefinition, but
 * some exporters list an initializer among the inputs too. */
static void map_put(name_map *m, const char *k, int v) {
    size_t i = hash_str(k) & (m->cap - 1);
    while (m->keys[i] && strcmp(m->keys[i], k) != 0) i = (i + 1) & (m->cap - 1);
    m->keys[i] = k;
    m->vals[i] = v;
}

typedef struct loader {
    cs_graph *g;
    name_map names;
    int cap_values;
    cs_error *err;
} loader;

/* An absent name (NULL) is fine. */
static int utf8_valid(const char *str) { return !str || cs_utf8_valid(str, strlen(str)); }

/* Names go into JSON answers (/v1/models, cam.layer, inspect --json) and
 * error messages, and JSON is UTF-8: jansson would silently drop a field
 * holding anything else.  ONNX strings are UTF-8 (protobuf's string type)
 * but nothing checked a file's, so a file whose graph names are not is
 * refused before any of them is used. */
static cs_status check_names(loader *L, const Onnx__GraphProto *gp) {
    for (size_t i = 0; i < gp->n_node; i++) {
        const Onnx__NodeProto *np = gp->node[i];
        int ok = utf8_valid(np->name) && utf8_valid(np->op_type) && utf8_valid(np->domain);
        for (size_t k = 0; ok && k < np->n_input; k++) ok = utf8_valid(np->input[k]);
        for (size_t k = 0; ok && k < np->n_output; k++) ok = utf8_valid(np->output[k]);
        for (size_t k = 0; ok && k < np->n_attribute; k++) ok = utf8_valid(np->attribute[k]->name);
        if (!ok) return cs_errorf(L->err, CS_EFORMAT, "node %zu: a name in it is not UTF-8", i);
    }
    for (size_t i = 0; i < gp->n_initializer; i++)
        if (!utf8_valid(gp->initializer[i]->name))
            return cs_errorf(L->err, CS_EFORMAT, "initializer %zu: its name is not UTF-8", i);
    for (size_t i = 0; i < gp->n_input; i++)
        if (!utf8_valid(gp->input[i]->name))
            return cs_errorf(L->err, CS_EFORMAT, "graph input %zu: its name is not UTF-8", i);
    for (size_t i = 0; i < gp->n_output; i++)
        if (!utf8_valid(gp->output[i]->name))
            return cs_errorf(L->err, CS_EFORMAT, "graph output %zu: its name is not UTF-8", i);
    return CS_OK;
}

static int new_value(loader *L, const char *name) {
    cs_graph *g = L->g;
    if (g->nvalues == L->cap_values) return -1; /* sized up front; a bug if hit */
    int idx = g->nvalues++;
    cs_value *v = &g->values[idx];
    v->name = cs_arena_strdup(&g->arena, name);
    if (!v->name) return -1;
    v->producer = -1;
    v->shape.ndim = -1;
    /* Anonymous constants (tensor attributes) are not addressable by name:
     * "" means "omitted" to node inputs and must not resolve for outputs. */
    if (v->name[0]) map_put(&L->names, v->name, idx);
    return idx;
}

static cs_status copy_tensor_data(loader *L, const Onnx__TensorProto *t, cs_value *v) {
    cs_graph *g = L->g;
    const char *name = t->name ? t->name : "";
    if (t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL || t->n_external_data)
        return cs_errorf(L->err, CS_EUNSUPPORTED,
                         "tensor '%s' uses external data; re-export with the weights inside the file",
                         name);
    cs_dtype dt = (cs_dtype)t->data_type;
    size_t esz = cs_dtype_size(dt);
    if (!esz)
        return cs_errorf(L->err, CS_EUNSUPPORTED, "tensor '%s' has unsupported data type %d", name,
                         t->data_type);
    if (t->n_dims > CS_MAX_DIMS)
        return cs_errorf(L->err, CS_EUNSUPPORTED, "tensor '%s' has %zu dims (max %d)", name,
                         t->n_dims, CS_MAX_DIMS);
    v->shape.dtype = dt;
    v->shape.ndim = (int)t->n_dims;
    int64_t n = 1;
    for (size_t i = 0; i < t->n_dims; i++) {
        if (t->dims[i] < 0 || (t->dims[i] && n > (INT64_C(1) << 40) / t->dims[i]))
            return cs_errorf(L->err, CS_EFORMAT, "tensor '%s' has an invalid dim %lld", name,
                             (long long)t->dims[i]);
        v->shape.dims[i] = t->dims[i];
        n *= t->dims[i];
    }
    size_t bytes = (size_t)n * esz;

    /* Data is in raw_data (little-endian bytes) or in the typed repeated
     * field that matches the type.  The sizes are checked before anything
     * is allocated: the dims are untrusted, and a tensor must not claim
     * more memory than the file holds. */
    size_t have;
    if (t->has_raw_data) have = t->raw_data.len;
    else if (dt == CS_DT_FLOAT) have = t->n_float_data * 4;
    else if (dt == CS_DT_INT64) have = t->n_int64_data * 8;
    else if (dt == CS_DT_DOUBLE) have = t->n_double_data * 8;
    else have = t->n_int32_data * esz; /* int32, int8, uint8, bool: stored widened in int32_data */
    if (have != bytes)
        return cs_errorf(L->err, CS_EFORMAT, "tensor '%s': %zu data bytes for a shape needing %zu",
                         name, have, bytes);

    /* Weights are by far the largest part of a model: point at the bytes
     * protobuf-c already unpacked (the message lives as long as the graph)
     * instead of copying them once more. */
    if (t->has_raw_data && bytes && ((uintptr_t)t->raw_data.data % 16) == 0) {
        v->data = t->raw_data.data;
        return CS_OK;
    }
    v->data = cs_arena_alloc(&g->arena, bytes ? bytes : 1);
    if (!v->data) return cs_errorf(L->err, CS_ENOMEM, "out of memory for tensor '%s'", name);
    if (!bytes) return CS_OK;
    if (t->has_raw_data) memcpy(v->data, t->raw_data.data, bytes);
    else if (dt == CS_DT_FLOAT) memcpy(v->data, t->float_data, bytes);
    else if (dt == CS_DT_INT64) memcpy(v->data, t->int64_data, bytes);
    else if (dt == CS_DT_DOUBLE) memcpy(v->data, t->double_data, bytes);
    else
        for (int64_t i = 0; i < n; i++) {
            int32_t x = t->int32_data[i];
            if (esz == 4) memcpy((char *)v->data + i * 4, &x, 4);
            else ((uint8_t *)v->data)[i] = (uint8_t)x;
        }
    return CS_OK;
}

static cs_status read_value_info(loader *L, const Onnx__ValueInfoProto *vi, cs_value *v) {
    if (!vi->type || vi->type->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE ||
        !vi->type->tensor_type)
        return cs_errorf(L->err, CS_EUNSUPPORTED, "graph input/output '%s' is not a tensor",
                         vi->name ? vi->name : "");
    const Onnx__TypeProto__Tensor *tt = vi->type->tensor_type;
    v->shape.dtype = (cs_dtype)tt->elem_type;
    if (!tt->shape) {
        v->shape.ndim = -1;
        return CS_OK;
    }
    if (tt->shape->n_dim > CS_MAX_DIMS)
        return cs_errorf(L->err, CS_EUNSUPPORTED, "'%s' has too many dims", vi->name);
    v->shape.ndim = (int)tt->shape->n_dim;
    for (size_t i = 0; i < tt->shape->n_dim; i++) {
        const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[i];
        v->shape.dims[i] =
            (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE && d->dim_value > 0)
                ? d->dim_value
                : -1;
    }
    return CS_OK;
}

static cs_status read_attr(loader *L, const Onnx__NodeProto *np, const Onnx__AttributeProto *ap,
                           cs_attr *a) {
    cs_graph *g = L->g;
    a->name = cs_arena_strdup(&g->arena, ap->name);
    if (!a->name) return cs_errorf(L->err, CS_ENOMEM, "out of memory");
    switch (ap->type) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT:
        a->type = CS_ATTR_FLOAT;
        a->f = ap->f;
        break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT:
        a->type = CS_ATTR_INT;
        a->i = ap->i;
        break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING: {
        a->type = CS_ATTR_STRING;
        char *s = cs_arena_alloc(&g->arena, ap->s.len + 1);
        if (!s) return cs_errorf(L->err, CS_ENOMEM, "out of memory");
        if (ap->s.len) memcpy(s, ap->s.data, ap->s.len);
        a->s = s;
        break;
    }
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS:
        a->type = CS_ATTR_FLOATS;
        a->n = (int)ap->n_floats;
        a->floats = cs_arena_memdup(&g->arena, ap->floats, ap->n_floats * sizeof(float));
        if (!a->floats) return cs_errorf(L->err, CS_ENOMEM, "out of memory");
        break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS:
        a->type = CS_ATTR_INTS;
        a->n = (int)ap->n_ints;
        a->ints = cs_arena_memdup(&g->arena, ap->ints, ap->n_ints * sizeof(int64_t));
        if (!a->ints) return cs_errorf(L->err, CS_ENOMEM, "out of memory");
        break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR: {
        if (!ap->t) return cs_errorf(L->err, CS_EFORMAT, "node '%s': empty tensor attribute", np->name);
        a->type = CS_ATTR_TENSOR;
        /* An anonymous constant value; Constant nodes are folded from it. */
        int idx = new_value(L, "");
        if (idx < 0) return cs_errorf(L->err, CS_ENOMEM, "out of memory");
        cs_status st = copy_tensor_data(L, ap->t, &g->values[idx]);
        if (st != CS_OK) return st;
        a->tensor = idx;
        break;
    }
    default:
        /* Graph-valued and string-list attributes belong to control flow and
         * ops we do not run; keep the node loadable, the op check decides. */
        a->type = CS_ATTR_STRING;
        a->s = "";
        break;
    }
    return CS_OK;
}

static cs_status read_node(loader *L, const Onnx__NodeProto *np, int idx) {
    cs_graph *g = L->g;
    cs_node *n = &g->nodes[idx];
    const char *name = np->name ? np->name : "";
    const char *op_type = np->op_type ? np->op_type : "";
    if (np->domain && np->domain[0] && strcmp(np->domain, "ai.onnx") != 0)
        return cs_errorf(L->err, CS_EUNSUPPORTED, "unsupported op %s (domain %s) in node '%s'",
                         op_type, np->domain, name);
    n->op = cs_op_from_name(op_type);
    if (n->op == CS_OP_UNKNOWN)
        return cs_errorf(L->err, CS_EUNSUPPORTED, "unsupported op %s in node '%s'", op_type, name);
    n->name = cs_arena_strdup(&g->arena, name);
    n->op_type = cs_arena_strdup(&g->arena, op_type);
    n->ninputs = (int)np->n_input;
    n->noutputs = (int)np->n_output;
    n->nattrs = (int)np->n_attribute;
    n->sum_input = -1;
    n->fold_bn = -1;
    n->inputs = cs_arena_alloc(&g->arena, (np->n_input + 1) * sizeof(int));
    n->outputs = cs_arena_alloc(&g->arena, (np->n_output + 1) * sizeof(int));
    n->attrs = cs_arena_alloc(&g->arena, (np->n_attribute + 1) * sizeof(cs_attr));
    if (!n->name || !n->op_type || !n->inputs || !n->outputs || !n->attrs)
        return cs_errorf(L->err, CS_ENOMEM, "out of memory");
    if (n->noutputs == 0)
        return cs_errorf(L->err, CS_EFORMAT, "node '%s' (%s) has no outputs", name, op_type);

    for (size_t a = 0; a < np->n_attribute; a++) {
        cs_status st = read_attr(L, np, np->attribute[a], &n->attrs[a]);
        if (st != CS_OK) return st;
    }
    for (size_t i = 0; i < np->n_input; i++) {
        const char *in = np->input[i] ? np->input[i] : "";
        if (!in[0]) {
            n->inputs[i] = -1; /* omitted optional input */
            continue;
        }
        int v = map_get(&L->names, in);
        if (v < 0)
            return cs_errorf(L->err, CS_EFORMAT,
                             "node '%s' (%s) reads '%s', which no earlier node or initializer "
                             "defines (graph not topologically sorted?)",
                             name, op_type, in);
        n->inputs[i] = v;
        g->values[v].nconsumers++;
    }
    for (size_t o = 0; o < np->n_output; o++) {
        const char *out = np->output[o] ? np->output[o] : "";
        if (!out[0]) { /* an unused optional output, e.g. Dropout's mask */
            /* ...but the first output is never optional: passes and the
             * planner index values by outputs[0] without a check. */
            if (o == 0)
                return cs_errorf(L->err, CS_EFORMAT, "node '%s' (%s) has no name for its first output",
                                 name, op_type);
            n->outputs[o] = -1;
            continue;
        }
        if (map_get(&L->names, out) >= 0)
            return cs_errorf(L->err, CS_EFORMAT, "tensor '%s' is defined twice (node '%s')", out,
                             name);
        int v = new_value(L, out);
        if (v < 0) return cs_errorf(L->err, CS_ENOMEM, "out of memory");
        g->values[v].producer = idx;
        n->outputs[o] = v;
    }
    return CS_OK;
}

static cs_status build(loader *L, const Onnx__ModelProto *mp) {
    cs_graph *g = L->g;
    const Onnx__GraphProto *gp = mp->graph;
    if (!gp) return cs_errorf(L->err, CS_EFORMAT, "ONNX model has no graph");
    g->opset = 0;
    for (size_t i = 0; i < mp->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = mp->opset_import[i];
        if (!o->domain || !o->domain[0] || strcmp(o->domain, "ai.onnx") == 0) g->opset = o->version;
    }
    if (g->opset == 0) g->opset = 1;
    if (g->opset < 7 || g->opset > 18)
        return cs_errorf(L->err, CS_EUNSUPPORTED, "ONNX opset %lld not supported (7..18)",
                         (long long)g->opset);
    g->producer_name = cs_arena_strdup(&g->arena, mp->producer_name);

    cs_status nst = check_names(L, gp);
    if (nst != CS_OK) return nst;

    /* Upper bound on values: every initializer, input, node output and
     * tensor attribute gets at most one. */
    size_t cap = gp->n_initializer + gp->n_input + 1;
    for (size_t i = 0; i < gp->n_node; i++) {
        const Onnx__NodeProto *np = gp->node[i];
        cap += np->n_output;
        for (size_t a = 0; a < np->n_attribute; a++) cap += 1;
    }
    if (cap > (1u << 24)) return cs_errorf(L->err, CS_ELIMIT, "ONNX graph too large");
    L->cap_values = (int)cap;
    g->values = cs_arena_alloc(&g->arena, cap * sizeof(cs_value));
    g->nodes = cs_arena_alloc(&g->arena, (gp->n_node + 1) * sizeof(cs_node));
    g->inputs = cs_arena_alloc(&g->arena, (gp->n_input + 1) * sizeof(int));
    g->outputs = cs_arena_alloc(&g->arena, (gp->n_output + 1) * sizeof(int));
    if (!g->values || !g->nodes || !g->inputs || !g->outputs || !map_init(&L->names, cap))
        return cs_errorf(L->err, CS_ENOMEM, "out of memory loading the graph");

    for (size_t i = 0; i < gp->n_initializer; i++) {
        const Onnx__TensorProto *t = gp->initializer[i];
        if (!t->name || !t->name[0]) return cs_errorf(L->err, CS_EFORMAT, "unnamed initializer");
        int v = new_value(L, t->name);
        if (v < 0) return cs_errorf(L->err, CS_ENOMEM, "out of memory");
        cs_status st = copy_tensor_data(L, t, &g->values[v]);
        if (st != CS_OK) return st;
    }
    for (size_t i = 0; i < gp->n_input; i++) {
        const Onnx__ValueInfoProto *vi = gp->input[i];
        if (!vi->name || !vi->name[0]) return cs_errorf(L->err, CS_EFORMAT, "unnamed graph input");
        if (map_get(&L->names, vi->name) >= 0) continue; /* an initializer listed as input */
        int v = new_value(L, vi->name);
        if (v < 0) return cs_errorf(L->err, CS_ENOMEM, "out of memory");
        cs_status st = read_value_info(L, vi, &g->values[v]);
        if (st != CS_OK) return st;
        g->values[v].is_graph_input = true;
        g->inputs[g->ninputs++] = v;
    }
    for (size_t i = 0; i < gp->n_node; i++) {
        cs_status st = read_node(L, gp->node[i], (int)i);
        g->nnodes = (int)i + 1;
        if (st != CS_OK) return st;
    }
    for (size_t i = 0; i < gp->n_output; i++) {
        const char *name = gp->output[i]->name ? gp->output[i]->name : "";
        int v = map_get(&L->names, name);
        if (v < 0) return cs_errorf(L->err, CS_EFORMAT, "graph output '%s' is never computed", name);
        g->values[v].is_graph_output = true;
        g->values[v].nconsumers++; /* the caller is a consumer too */
        g->outputs[g->noutputs++] = v;
    }
    if (g->ninputs < 1 || g->noutputs < 1)
        return cs_errorf(L->err, CS_EFORMAT, "ONNX graph needs at least one input and one output");

    g->nmeta = (int)mp->n_metadata_props;
    g->meta_keys = cs_arena_alloc(&g->arena, (mp->n_metadata_props + 1) * sizeof(char *));
    g->meta_values = cs_arena_alloc(&g->arena, (mp->n_metadata_props + 1) * sizeof(char *));
    if (!g->meta_keys || !g->meta_values) return cs_errorf(L->err, CS_ENOMEM, "out of memory");
    for (size_t i = 0; i < mp->n_metadata_props; i++) {
        g->meta_keys[i] = cs_arena_strdup(&g->arena, mp->metadata_props[i]->key);
        g->meta_values[i] = cs_arena_strdup(&g->arena, mp->metadata_props[i]->value);
    }
    return CS_OK;
}

cs_status cs_onnx_parse(const void *buf, size_t len, cs_graph *g, cs_error *err) {
    memset(g, 0, sizeof *g);
    if (!buf || len == 0) return cs_errorf(err, CS_EFORMAT, "invalid ONNX model: empty file");
    Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, len, buf);
    if (!mp) return cs_errorf(err, CS_EFORMAT, "invalid ONNX model: protobuf decoding failed");
    loader L = {.g = g, .err = err};
    cs_status st = build(&L, mp);
    map_free(&L.names);
    g->pb = mp; /* constants may point into it */
    if (st != CS_OK) cs_graph_free(g);
    return st;
}

void cs_graph_free(cs_graph *g) {
    cs_arena_free(&g->arena);
    if (g->pb) onnx__model_proto__free_unpacked(g->pb, NULL);
    memset(g, 0, sizeof *g);
}
