/* Planning and execution of one batch size.
 *
 * cs_plan_build walks the graph once, in order, and for each live node
 *   1. infers concrete output shapes (the batch is now known),
 *   2. folds the node if all its inputs are constant for this batch (this is
 *      where Shape→Gather→Unsqueeze→Concat→Reshape chains disappear),
 *   3. fuses what follows it when nobody asked to see the intermediate
 *      (activations and the residual Add into a Conv's post-ops, Relu into
 *      BatchNormalization, x*Sigmoid(x) into swish),
 *   4. picks a kernel: a oneDNN primitive (Conv, inner product, matmul,
 *      pooling, batch norm, eltwise, binary, concat) or the reference kernel
 *      of ops.c, and inserts a reorder where the producer's layout is not
 *      the one the consumer wants.
 * Tensors keep the layout their producer chose (oneDNN's blocked formats
 * for convolutions) until a consumer needs another; shadows cache the
 * reorders so a tensor is converted once however many consumers want it.
 * Then buffers get offsets in one arena by liveness, and each primitive
 * argument gets its memory object, once.  Running the plan is a loop over
 * prebuilt steps. */
#include "engine/engine_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARGS 64   /* a DenseNet concat has dozens of inputs */
#define MAX_REF_IO 64

typedef struct rt_tensor {
    cs_shape shape;
    const void *cdata;      /* constant: graph data or plan-folded */
    dnnl_memory_desc_t md;  /* layout of the buffer */
    int alias;              /* rt index whose buffer this one views, or -1 */
    size_t size;
    int64_t offset;         /* in the arena; -1 = none (constant) */
    int first, last;        /* liveness in step indices */
    int plain;              /* rt index of the plain-layout copy, or -1 */
    int nshadow;            /* other-layout copies, for conv inputs */
    int shadow[4];
} rt_tensor;

typedef struct step_arg {
    int id;                 /* DNNL_ARG_* */
    int rt;                 /* -1: fixed pointer */
    const void *fixed;
    dnnl_memory_desc_t md;
    dnnl_memory_t mem;
} step_arg;

typedef enum { ST_PRIM, ST_REF } step_kind;

typedef struct step {
    step_kind kind;
    bool oom;               /* an argument could not be added */
    int node;               /* -1 for reorders */
    dnnl_primitive_t prim;
    dnnl_memory_t scratch;  /* its scratchpad, bound to the caller's buffer per run; or NULL */
    int nargs, cap_args;
    step_arg *args;         /* malloc'd: a memory descriptor is ~1 KB */
    /* ST_REF: dense C-order tensors */
    cs_node ref_node;       /* copy of the graph node with this plan's fusion */
    int nin, nout;
    int in_rt[MAX_REF_IO], out_rt[MAX_REF_IO];
} step;

typedef struct pnode {      /* this plan's view of a graph node */
    bool skip;              /* fused into an earlier node, or folded */
    int out_value;          /* where the (fused) result lands */
    int sum_value;
    int nfused;
    cs_fused_act fused[CS_MAX_FUSED];
    bool bn_relu;
    cs_node *unfolded;      /* a Conv run without its folded BN (see cs_node) */
} pnode;

struct cs_plan {
    cs_model *m;
    int batch;
    bool pack;              /* load time: reordered weights go to the model */
    cs_arena consts;        /* folded constants, session-local packed weights */
    int nrt, cap_rt;
    rt_tensor *rt;
    int *val_rt;            /* [nvalues] → rt index or -1 */
    bool *keep;             /* [nvalues] */
    pnode *pn;              /* [nnodes] */
    int nsteps, cap_steps;
    step *steps;
    unsigned char *arena;
    size_t arena_size;
    /* Every primitive is created with this attribute (scratchpad_mode user)
     * and runs on the scratch buffer cs_plan_run is given, which must hold
     * scratch_size bytes.  oneDNN's default, a scratchpad per thread, would
     * tie each primitive to the thread that created it (running or freeing
     * it on another leaks or crashes), and a session may change threads. */
    dnnl_primitive_attr_t uattr;
    size_t scratch_size;
    int in_rt, out_rt;      /* graph input; plain copy of the graph output */
    int ovr_v, ovr_rt;      /* value replaced by caller data right after it is computed */
    bool in_unused;         /* the override leaves nothing that reads the graph input */
    double flops;
    int nkernels;
    bool no_winograd;       /* CS_NO_WINOGRAD=1: every Conv direct */
    int nbf16;              /* convolutions planned in bf16 (CS_TRACE) */
    int nwinograd;          /* Convs planned as Winograd */
    /* consumers of each value, for fusion */
    int *cons_start, *cons;
    /* shapes of values fused away (no tensor of their own), so that
     * inspect and the layer list still know them */
    cs_shape *fused_shape;
};

int cs_engine_winograd(void) {
    const char *v = getenv("CS_NO_WINOGRAD");
    return !(v && *v && strcmp(v, "0") != 0);
}

int cs_engine_prune_override(void) {
    const char *v = getenv("CS_NO_PRUNE");
    return !(v && *v && strcmp(v, "0") != 0);
}

cs_status cs_dnnl_check(dnnl_status_t s, const char *what, cs_error *err) {
    if (s == dnnl_success) return CS_OK;
    return cs_errorf(err, CS_EBACKEND, "oneDNN failed in %s (status %d)", what, (int)s);
}

#define DNNL_TRY(call, what)                                                   \
    do {                                                                       \
        cs_status st_ = cs_dnnl_check((call), (what), err);                    \
        if (st_ != CS_OK) return st_;                                          \
    } while (0)

/* ---- tensors -------------------------------------------------------------- */

static void plain_md(dnnl_memory_desc_t *md, const cs_shape *s) {
    dnnl_dims_t d;
    int nd = s->ndim;
    if (nd == 0) {
        nd = 1;
        d[0] = 1;
    }
    for (int i = 0; i < s->ndim; i++) d[i] = s->dims[i];
    dnnl_memory_desc_init_by_strides(md, nd, d, dnnl_f32, NULL);
}

static bool md_is_plain(const dnnl_memory_desc_t *md, const cs_shape *s) {
    dnnl_memory_desc_t p;
    plain_md(&p, s);
    return dnnl_memory_desc_equal(md, &p);
}

static int new_rt(cs_plan *p, const cs_shape *shape) {
    const cs_shape sc = *shape, *s = &sc; /* shape may point into p->rt, which moves */
    if (p->nrt == p->cap_rt) {
        int cap = p->cap_rt ? 2 * p->cap_rt : 256;
        rt_tensor *n = realloc(p->rt, (size_t)cap * sizeof *n);
        if (!n) return -1;
        p->rt = n;
        p->cap_rt = cap;
    }
    rt_tensor *t = &p->rt[p->nrt];
    memset(t, 0, sizeof *t);
    t->shape = *s;
    t->alias = -1;
    t->offset = -1;
    t->first = t->last = -1;
    t->plain = -1;
    plain_md(&t->md, s);
    return p->nrt++;
}

static step *new_step(cs_plan *p, step_kind kind, int node) {
    if (p->nsteps == p->cap_steps) {
        int cap = p->cap_steps ? 2 * p->cap_steps : 256;
        step *n = realloc(p->steps, (size_t)cap * sizeof *n);
        if (!n) return NULL;
        p->steps = n;
        p->cap_steps = cap;
    }
    step *s = &p->steps[p->nsteps++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->node = node;
    return s;
}

/* Root of an alias chain: the tensor that owns the buffer. */
static int rt_root(const cs_plan *p, int r) {
    while (p->rt[r].alias >= 0) r = p->rt[r].alias;
    return r;
}

static void touch(cs_plan *p, int r, int stepi) {
    for (;;) {
        rt_tensor *t = &p->rt[r];
        if (t->first < 0 || stepi < t->first) t->first = stepi;
        if (stepi > t->last) t->last = stepi;
        if (t->alias < 0) break;
        r = t->alias;
    }
}

/* Room for one more argument; false when out of memory. */
static bool grow_args(step *s) {
    if (s->nargs < s->cap_args) return true;
    int cap = s->cap_args ? 2 * s->cap_args : 4;
    step_arg *n = realloc(s->args, (size_t)cap * sizeof *n);
    if (!n) return false;
    memset(n + s->cap_args, 0, (size_t)(cap - s->cap_args) * sizeof *n);
    s->args = n;
    s->cap_args = cap;
    return true;
}

static void add_arg(step *s, int id, cs_plan *p, int r, const dnnl_memory_desc_t *md) {
    if (!grow_args(s)) {
        s->oom = true;
        return;
    }
    step_arg *a = &s->args[s->nargs++];
    a->id = id;
    a->rt = r;
    a->md = md ? *md : p->rt[r].md;
}

static void add_fixed_arg(step *s, int id, const void *ptr, const dnnl_memory_desc_t *md) {
    if (!grow_args(s)) {
        s->oom = true;
        return;
    }
    step_arg *a = &s->args[s->nargs++];
    a->id = id;
    a->rt = -1;
    a->fixed = ptr;
    a->md = *md;
}

/* attr: NULL for the plan's default, else one the caller made with
 * cs_dnnl_user_scratchpad applied. */
static cs_status make_prim(cs_plan *p, const void *op_desc, const_dnnl_primitive_attr_t attr,
                           dnnl_primitive_desc_t *pd, const char *what, cs_error *err) {
    DNNL_TRY(dnnl_primitive_desc_create(pd, op_desc, attr ? attr : p->uattr, p->m->eng, NULL), what);
    return CS_OK;
}

static cs_status finish_prim(cs_plan *p, step *s, dnnl_primitive_desc_t pd, const char *what, cs_error *err) {
    if (s->oom) {
        dnnl_primitive_desc_destroy(pd);
        return cs_errorf(err, CS_ENOMEM, "out of memory planning %s", what);
    }
    cs_status st = cs_dnnl_prim_create(pd, p->m->eng, &s->prim, &s->scratch, &p->scratch_size, what, err);
    dnnl_primitive_desc_destroy(pd);
    return st;
}

cs_status cs_dnnl_user_scratchpad(dnnl_primitive_attr_t attr, cs_error *err) {
    return cs_dnnl_check(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user),
                         "scratchpad mode", err);
}

cs_status cs_dnnl_prim_create(const_dnnl_primitive_desc_t pd, dnnl_engine_t eng, dnnl_primitive_t *prim,
                              dnnl_memory_t *scratch, size_t *need, const char *what, cs_error *err) {
    const_dnnl_primitive_attr_t attr = NULL;
    dnnl_scratchpad_mode_t mode = dnnl_scratchpad_mode_library;
    if (dnnl_primitive_desc_get_attr(pd, &attr) != dnnl_success ||
        dnnl_primitive_attr_get_scratchpad_mode(attr, &mode) != dnnl_success || mode != dnnl_scratchpad_mode_user)
        return cs_errorf(err, CS_EBACKEND, "internal: %s planned without a caller-owned scratchpad", what);
    *scratch = NULL;
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t bytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
    if (bytes) {
        DNNL_TRY(dnnl_memory_create(scratch, smd, eng, DNNL_MEMORY_NONE), "scratchpad memory");
        if (bytes > *need) *need = bytes;
    }
    dnnl_status_t ds = dnnl_primitive_create(prim, pd);
    if (ds != dnnl_success && *scratch) {
        dnnl_memory_destroy(*scratch);
        *scratch = NULL;
    }
    return cs_dnnl_check(ds, what, err);
}

dnnl_status_t cs_dnnl_exec(dnnl_primitive_t prim, dnnl_stream_t stream, int nargs, dnnl_exec_arg_t *args,
                           dnnl_memory_t scratch, void *scratch_buf) {
    if (scratch) {
        dnnl_status_t ds = dnnl_memory_set_data_handle(scratch, scratch_buf);
        if (ds != dnnl_success) return ds;
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, scratch};
    }
    return dnnl_primitive_execute(prim, stream, nargs, args);
}

size_t cs_plan_scratch_size(const cs_plan *p) { return p->scratch_size; }

const_dnnl_primitive_attr_t cs_plan_attr(const cs_plan *p) { return p->uattr; }

void cs_plan_need_scratch(cs_plan *p, size_t bytes) {
    if (bytes > p->scratch_size) p->scratch_size = bytes;
}

/* Appends a reorder step src → a new tensor with layout md; returns its rt. */
static cs_status add_reorder(cs_plan *p, int src, const dnnl_memory_desc_t *mdp, int *out,
                             cs_error *err) {
    /* mdp may point into p->rt, which new_rt may move (callers pass
     * another tensor's layout: rt_as(p, b, &p->rt[a].md, ...)) */
    const dnnl_memory_desc_t mdc = *mdp, *md = &mdc;
    int r = new_rt(p, &p->rt[src].shape);
    if (r < 0) return cs_errorf(err, CS_ENOMEM, "out of memory planning");
    p->rt[r].md = *md;
    dnnl_primitive_desc_t pd;
    DNNL_TRY(dnnl_reorder_primitive_desc_create(&pd, &p->rt[src].md, p->m->eng, md, p->m->eng, p->uattr),
             "reorder");
    step *s = new_step(p, ST_PRIM, -1);
    if (!s) {
        dnnl_primitive_desc_destroy(pd);
        return cs_errorf(err, CS_ENOMEM, "out of memory planning");
    }
    add_arg(s, DNNL_ARG_FROM, p, src, NULL);
    add_arg(s, DNNL_ARG_TO, p, r, NULL);
    *out = r;
    return finish_prim(p, s, pd, "reorder", err);
}

/* A tensor with the plain (dense C-order) layout holding r's values. */
static cs_status rt_plain(cs_plan *p, int r, int *out, cs_error *err) {
    if (p->rt[r].cdata || md_is_plain(&p->rt[r].md, &p->rt[r].shape)) {
        *out = r;
        return CS_OK;
    }
    if (p->rt[r].plain >= 0) {
        *out = p->rt[r].plain;
        return CS_OK;
    }
    dnnl_memory_desc_t md;
    plain_md(&md, &p->rt[r].shape);
    cs_status st = add_reorder(p, r, &md, out, err);
    if (st == CS_OK) p->rt[r].plain = *out;
    return st;
}

/* A tensor with exactly layout md holding r's values (conv inputs). */
static cs_status rt_as(cs_plan *p, int r, const dnnl_memory_desc_t *md, int *out, cs_error *err) {
    rt_tensor *t = &p->rt[r];
    if (dnnl_memory_desc_equal(&t->md, md)) {
        *out = r;
        return CS_OK;
    }
    if (t->plain >= 0 && dnnl_memory_desc_equal(&p->rt[t->plain].md, md)) {
        *out = t->plain;
        return CS_OK;
    }
    for (int i = 0; i < t->nshadow; i++)
        if (dnnl_memory_desc_equal(&p->rt[t->shadow[i]].md, md)) {
            *out = t->shadow[i];
            return CS_OK;
        }
    cs_status st = add_reorder(p, r, md, out, err);
    if (st == CS_OK && p->rt[r].nshadow < 4) p->rt[r].shadow[p->rt[r].nshadow++] = *out;
    return st;
}

/* The rt of value v: its constant, or the tensor computed earlier. */
static int val(cs_plan *p, int v) { return v < 0 ? -1 : p->val_rt[v]; }

/* The node as this plan runs it: the graph's, or an unfolded Conv. */
static cs_node *node_of(cs_plan *p, int ni) {
    return p->pn[ni].unfolded ? p->pn[ni].unfolded : &p->m->g.nodes[ni];
}

/* ---- fusion ---------------------------------------------------------------- */

static bool is_const_value(const cs_plan *p, int v) {
    return v >= 0 && p->val_rt[v] >= 0 && p->rt[p->val_rt[v]].cdata != NULL;
}

static int live_consumers(const cs_plan *p, int v, int *only) {
    int n = 0;
    for (int i = p->cons_start[v]; i < p->cons_start[v + 1]; i++) {
        int c = p->cons[i];
        if (p->m->g.nodes[c].dead || p->pn[c].skip) continue;
        if (only) only[n < 2 ? n : 1] = c;
        n++;
    }
    return n;
}

static bool fusable_value(const cs_plan *p, int v) {
    const cs_value *cv = &p->m->g.values[v];
    return !p->keep[v] && !cv->is_graph_output;
}

/* Maps a unary node to a fused activation; false if it is not one. */
static bool act_of(const cs_plan *p, const cs_node *n, cs_fused_act *a) {
    const cs_graph *g = &p->m->g;
    memset(a, 0, sizeof *a);
    switch (n->op) {
    case CS_OP_RELU: a->kind = CS_ACT_RELU; return true;
    case CS_OP_LEAKYRELU:
        a->kind = CS_ACT_LEAKYRELU;
        a->alpha = cs_attr_float(n, "alpha", 0.01f);
        return true;
    case CS_OP_SIGMOID: a->kind = CS_ACT_SIGMOID; return true;
    case CS_OP_TANH: a->kind = CS_ACT_TANH; return true;
    case CS_OP_HARDSWISH: a->kind = CS_ACT_HARDSWISH; return true;
    case CS_OP_HARDSIGMOID:
        a->kind = CS_ACT_HARDSIGMOID;
        a->alpha = cs_attr_float(n, "alpha", 0.2f);
        a->beta = cs_attr_float(n, "beta", 0.5f);
        return true;
    case CS_OP_CLIP: {
        a->kind = CS_ACT_CLIP;
        a->alpha = cs_attr_float(n, "min", -INFINITY);
        a->beta = cs_attr_float(n, "max", INFINITY);
        for (int i = 1; i < n->ninputs && i < 3; i++) {
            int v = n->inputs[i];
            if (v < 0) continue;
            if (!is_const_value(p, v)) return false;
            float x = *(const float *)p->rt[p->val_rt[v]].cdata;
            if (g->values[v].shape.dtype != CS_DT_FLOAT) return false;
            if (i == 1) a->alpha = x;
            else a->beta = x;
        }
        return true;
    }
    default: return false;
    }
}

/* Decides what node ni, whose first output has shape y, absorbs.  Every
 * absorbed node has y's shape too (activations, same-shape Add, swish). */
static void plan_fusion(cs_plan *p, int ni, const cs_shape *y) {
    cs_graph *g = &p->m->g;
    cs_node *n = node_of(p, ni);
    pnode *pn = &p->pn[ni];
    pn->sum_value = -1;
    pn->out_value = n->outputs[0];
    bool conv = n->op == CS_OP_CONV;
    bool bn = n->op == CS_OP_BATCHNORM;
    if (!conv && !bn) return;
    int cur = n->outputs[0];
    for (;;) {
        if (!fusable_value(p, cur)) break;
        int c[2];
        int nc = live_consumers(p, cur, c);
        if (nc == 1) {
            cs_node *cn = &g->nodes[c[0]];
            cs_fused_act a;
            if (bn) {
                if (cn->op == CS_OP_RELU && !pn->bn_relu) {
                    pn->bn_relu = true;
                    p->pn[c[0]].skip = true;
                    p->fused_shape[cur] = *y;
                    cur = cn->outputs[0];
                    continue;
                }
                break;
            }
            if (act_of(p, cn, &a) && pn->nfused < CS_MAX_FUSED - 1) {
                pn->fused[pn->nfused++] = a;
                p->pn[c[0]].skip = true;
                p->fused_shape[cur] = *y;
                cur = cn->outputs[0];
                continue;
            }
            if (cn->op == CS_OP_ADD && pn->nfused == 0 && pn->sum_value < 0 && cn->ninputs == 2) {
                int other = cn->inputs[0] == cur ? cn->inputs[1] : cn->inputs[0];
                int orr = val(p, other);
                /* The addend must already exist (computed before this node)
                 * and have our shape; the sum post-op reads it from dst. */
                if (orr >= 0 && !p->rt[orr].cdata && cn->inputs[0] != cn->inputs[1] &&
                    p->rt[orr].shape.ndim == 4) {
                    pn->sum_value = other;
                    p->pn[c[0]].skip = true;
                    p->fused_shape[cur] = *y;
                    cur = cn->outputs[0];
                    continue;
                }
            }
            break;
        }
        if (nc == 2 && conv && pn->nfused < CS_MAX_FUSED - 1) {
            /* x * Sigmoid(x) = swish (SiLU), exported as two nodes. */
            cs_node *a0 = &g->nodes[c[0]], *a1 = &g->nodes[c[1]];
            cs_node *sig = a0->op == CS_OP_SIGMOID ? a0 : a1;
            cs_node *mul = a0->op == CS_OP_SIGMOID ? a1 : a0;
            int sig_i = a0->op == CS_OP_SIGMOID ? c[0] : c[1];
            int mul_i = a0->op == CS_OP_SIGMOID ? c[1] : c[0];
            if (sig->op == CS_OP_SIGMOID && mul->op == CS_OP_MUL && mul->ninputs == 2 &&
                fusable_value(p, sig->outputs[0]) &&
                ((mul->inputs[0] == cur && mul->inputs[1] == sig->outputs[0]) ||
                 (mul->inputs[1] == cur && mul->inputs[0] == sig->outputs[0]))) {
                int sc[2];
                if (live_consumers(p, sig->outputs[0], sc) == 1) {
                    cs_fused_act a = {.kind = CS_ACT_SWISH, .alpha = 1.0f};
                    pn->fused[pn->nfused++] = a;
                    p->pn[sig_i].skip = true;
                    p->pn[mul_i].skip = true;
                    p->fused_shape[cur] = *y;
                    p->fused_shape[sig->outputs[0]] = *y;
                    cur = mul->outputs[0];
                    continue;
                }
            }
        }
        break;
    }
    pn->out_value = cur;
}

static cs_status append_act_postops(dnnl_post_ops_t po, const cs_fused_act *f, int nf,
                                    cs_error *err) {
    for (int i = 0; i < nf; i++) {
        const cs_fused_act *a = &f[i];
        dnnl_status_t s = dnnl_success;
        switch (a->kind) {
        case CS_ACT_RELU: s = dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_relu, 0, 0); break;
        case CS_ACT_LEAKYRELU:
            s = dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_relu, a->alpha, 0);
            break;
        case CS_ACT_CLIP:
            s = dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_clip_v2, a->alpha, a->beta);
            break;
        case CS_ACT_SIGMOID:
            s = dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_logistic, 0, 0);
            break;
        case CS_ACT_TANH: s = dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_tanh, 0, 0); break;
        case CS_ACT_HARDSWISH:
            s = dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_hardswish, 0, 0);
            break;
        case CS_ACT_HARDSIGMOID: /* no such alg in oneDNN 2.6: linear then clip */
            s = dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_linear, a->alpha, a->beta);
            if (s == dnnl_success)
                s = dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_clip_v2, 0.f, 1.f);
            break;
        case CS_ACT_GELU_ERF:
            s = dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_gelu_erf, 0, 0);
            break;
        case CS_ACT_SWISH:
            s = dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_swish, 1.f, 0);
            break;
        case CS_ACT_NONE: break;
        }
        if (s != dnnl_success) return cs_dnnl_check(s, "post-op", err);
    }
    return CS_OK;
}

/* ---- kernels ----------------------------------------------------------------- */

/* Output rt for node ni's (fused) result. */
static cs_status bind_output(cs_plan *p, int v, const cs_shape *s, int *out, cs_error *err) {
    int r = new_rt(p, s);
    if (r < 0) return cs_errorf(err, CS_ENOMEM, "out of memory planning");
    p->val_rt[v] = r;
    *out = r;
    return CS_OK;
}

/* Binds value v (shape y) to a new tensor with layout md (NULL: plain) and
 * opens the step that computes it with pd.  On failure pd is destroyed. */
static cs_status open_step(cs_plan *p, int ni, int v, const cs_shape *y, const dnnl_memory_desc_t *md,
                           dnnl_primitive_desc_t pd, int *yr, step **s, cs_error *err) {
    dnnl_memory_desc_t mdc; /* md may point into p->rt, which bind_output can move */
    if (md) mdc = *md;
    cs_status st = bind_output(p, v, y, yr, err);
    if (st == CS_OK && md) p->rt[*yr].md = mdc;
    if (st == CS_OK && !(*s = new_step(p, ST_PRIM, ni))) st = cs_errorf(err, CS_ENOMEM, "out of memory");
    if (st != CS_OK) dnnl_primitive_desc_destroy(pd);
    return st;
}

static cs_status reorder_weights(cs_model *m, const void *src, const dnnl_memory_desc_t *src_md,
                                 const dnnl_memory_desc_t *want, void *dst, cs_error *err);

static cs_status weights_for(cs_plan *p, int ni, const dnnl_memory_desc_t *want,
                             const void *src, const dnnl_memory_desc_t *src_md,
                             const void **out, cs_error *err) {
    cs_model *m = p->m;
    if (dnnl_memory_desc_equal(want, src_md)) {
        *out = src;
        return CS_OK;
    }
    /* an unfolded Conv has other weights than the model packed for it */
    static cs_packed none;
    cs_packed *pk = p->pn[ni].unfolded ? &none : &m->packed[ni];
    if (pk->data && dnnl_memory_desc_equal(&pk->md, want)) {
        *out = pk->data;
        return CS_OK;
    }
    /* Reorder once, now: into the model while it loads (shared by every
     * session); later, when another batch size wants another layout, into
     * the model's memo of extra layouts (also shared: each layout is made
     * once per model, not once per plan); an unfolded Conv's weights into
     * this plan. */
    const bool memo = !p->pack && pk != &none;
    if (memo) {
        pthread_mutex_lock(&m->bwd_lock);
        for (struct cs_packed_more *e = m->more_packed; e; e = e->next)
            if (e->node == ni && dnnl_memory_desc_equal(&e->w.md, want)) {
                pthread_mutex_unlock(&m->bwd_lock);
                *out = e->w.data;
                return CS_OK;
            }
    }
    size_t sz = dnnl_memory_desc_get_size(want);
    struct cs_packed_more *e = memo ? cs_arena_alloc(&m->bwd_arena, sizeof *e) : NULL;
    void *dst = p->pack ? cs_arena_alloc(&m->pack_arena, sz)
              : memo    ? (e ? cs_arena_alloc(&m->bwd_arena, sz) : NULL)
                        : cs_arena_alloc(&p->consts, sz);
    if (!dst) {
        if (memo) pthread_mutex_unlock(&m->bwd_lock);
        return cs_errorf(err, CS_ENOMEM, "out of memory packing weights");
    }
    cs_status rs = reorder_weights(m, src, src_md, want, dst, err);
    if (memo) {
        if (rs == CS_OK) {
            e->node = ni;
            e->w.md = *want;
            e->w.data = dst;
            e->next = m->more_packed;
            m->more_packed = e;
        }
        pthread_mutex_unlock(&m->bwd_lock);
    }
    if (rs != CS_OK) return rs;
    if (p->pack && !pk->data && pk != &none) {
        pk->md = *want;
        pk->data = dst;
    }
    *out = dst;
    return CS_OK;
}

/* One-shot: created, run and destroyed here on one thread, so oneDNN's own
 * scratchpad is safe (unlike a plan's primitives, see cs_plan.uattr). */
static cs_status reorder_weights(cs_model *m, const void *src, const dnnl_memory_desc_t *src_md,
                                 const dnnl_memory_desc_t *want, void *dst, cs_error *err) {
    dnnl_memory_t ms, md;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_stream_t stream;
    DNNL_TRY(dnnl_memory_create(&ms, src_md, m->eng, (void *)src), "weights memory");
    DNNL_TRY(dnnl_memory_create(&md, want, m->eng, dst), "weights memory");
    DNNL_TRY(dnnl_reorder_primitive_desc_create(&pd, src_md, m->eng, want, m->eng, NULL),
             "weights reorder");
    DNNL_TRY(dnnl_primitive_create(&prim, pd), "weights reorder");
    dnnl_primitive_desc_destroy(pd);
    DNNL_TRY(dnnl_stream_create(&stream, m->eng, dnnl_stream_default_flags), "stream");
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, ms}, {DNNL_ARG_TO, md}};
    dnnl_status_t s = dnnl_primitive_execute(prim, stream, 2, args);
    dnnl_stream_wait(stream);
    dnnl_stream_destroy(stream);
    dnnl_primitive_destroy(prim);
    dnnl_memory_destroy(ms);
    dnnl_memory_destroy(md);
    DNNL_TRY(s, "weights reorder");
    return CS_OK;
}

void cs_conv_pads(const cs_node *n, const cs_shape *x, const cs_shape *w, const cs_shape *y,
                      dnnl_dims_t st, dnnl_dims_t dil, dnnl_dims_t pl, dnnl_dims_t pr) {
    const int64_t *strides, *dils, *pads;
    int ns = cs_attr_ints(n, "strides", &strides);
    int nd = cs_attr_ints(n, "dilations", &dils);
    int np = cs_attr_ints(n, "pads", &pads);
    const char *ap = cs_attr_string(n, "auto_pad", "NOTSET");
    for (int i = 0; i < 2; i++) {
        int64_t s = ns == 2 ? strides[i] : 1, d = nd == 2 ? dils[i] : 1;
        int64_t k = w->dims[2 + i], in = x->dims[2 + i], out = y->dims[2 + i];
        st[i] = s;
        dil[i] = d - 1;
        if (strcmp(ap, "NOTSET") == 0) {
            pl[i] = np == 4 ? pads[i] : 0;
        } else if (strcmp(ap, "VALID") == 0) {
            pl[i] = 0;
        } else {
            int64_t total = (out - 1) * s + (k - 1) * d + 1 - in;
            if (total < 0) total = 0;
            pl[i] = strcmp(ap, "SAME_LOWER") == 0 ? total - total / 2 : total / 2;
        }
        /* Right padding that makes oneDNN produce exactly `out` (covers
         * ceil_mode for pools and asymmetric ONNX pads). */
        pr[i] = (out - 1) * s + (k - 1) * d + 1 - in - pl[i];
    }
}

/* Whether Conv ni, reading xin, may accumulate onto the addend value v in
 * place: after ni nothing but the fused Add reads v, v lives in the arena
 * with the Conv's output layout, and it is not the Conv's own input.
 * (Earlier readers, and copies made for them, ran already.) */
static bool sum_in_place(cs_plan *p, int ni, int v, int xin, const dnnl_memory_desc_t *dst_md) {
    const cs_value *cv = &p->m->g.values[v];
    int r = val(p, v), root = rt_root(p, r);
    if (p->keep[v] || cv->is_graph_output || cv->is_graph_input || v == p->ovr_v) return false;
    if (p->rt[root].cdata || !dnnl_memory_desc_equal(&p->rt[r].md, dst_md) ||
        !dnnl_memory_desc_equal(&p->rt[root].md, dst_md) || rt_root(p, xin) == root)
        return false;
    /* every value sharing the buffer (earlier in-place sums chain) counts */
    int later = 0;
    for (int w = 0; w < p->m->g.nvalues; w++) {
        int rw = p->val_rt[w];
        if (rw < 0 || rt_root(p, rw) != root) continue;
        if (w != v && (p->keep[w] || p->m->g.values[w].is_graph_output)) return false;
        for (int i = p->cons_start[w]; i < p->cons_start[w + 1]; i++)
            if (!p->m->g.nodes[p->cons[i]].dead && p->cons[i] > ni) later++;
    }
    return later == 1;
}

/* The primitive of Conv ni in data type dt for its input and weights and
 * dst_dt for its output (bias and post-ops compute in fp32); *out NULL and
 * CS_OK when oneDNN has no bf16 implementation.  *w_plain: the layout of
 * the model's weights (fp32), *b_md the bias's. */
static cs_status conv_pd(cs_plan *p, int ni, const cs_shape *x, const cs_shape *w, const cs_shape *yshape,
                         dnnl_data_type_t dt, dnnl_data_type_t dst_dt, dnnl_primitive_desc_t *out,
                         dnnl_memory_desc_t *w_plain, dnnl_memory_desc_t *b_md, cs_error *err) {
    cs_node *n = node_of(p, ni);
    pnode *pn = &p->pn[ni];
    int bv = n->ninputs > 2 ? n->inputs[2] : -1;
    int64_t group = cs_attr_int(n, "group", 1);
    dnnl_dims_t st, dil, pl, pr;
    cs_conv_pads(n, x, w, yshape, st, dil, pl, pr);
    *out = NULL;

    dnnl_memory_desc_t src_any, w_any, dst_any;
    dnnl_dims_t xd = {x->dims[0], x->dims[1], x->dims[2], x->dims[3]};
    dnnl_dims_t yd = {yshape->dims[0], yshape->dims[1], yshape->dims[2], yshape->dims[3]};
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&src_any, 4, xd, dt, dnnl_format_tag_any), "md");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&dst_any, 4, yd, dst_dt, dnnl_format_tag_any), "md");
    if (group == 1) {
        dnnl_dims_t wd = {w->dims[0], w->dims[1], w->dims[2], w->dims[3]};
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&w_any, 4, wd, dt, dnnl_format_tag_any), "md");
        DNNL_TRY(dnnl_memory_desc_init_by_tag(w_plain, 4, wd, dnnl_f32, dnnl_abcd), "md");
    } else {
        dnnl_dims_t wd = {group, w->dims[0] / group, w->dims[1], w->dims[2], w->dims[3]};
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&w_any, 5, wd, dt, dnnl_format_tag_any), "md");
        DNNL_TRY(dnnl_memory_desc_init_by_tag(w_plain, 5, wd, dnnl_f32, dnnl_abcde), "md");
    }
    dnnl_dims_t bd = {yshape->dims[1]};
    DNNL_TRY(dnnl_memory_desc_init_by_tag(b_md, 1, bd, dnnl_f32, dnnl_a), "md");

    dnnl_primitive_attr_t attr;
    dnnl_post_ops_t po;
    DNNL_TRY(dnnl_primitive_attr_create(&attr), "attr");
    if (dnnl_post_ops_create(&po) != dnnl_success) {
        dnnl_primitive_attr_destroy(attr);
        return cs_errorf(err, CS_EBACKEND, "oneDNN failed in post-ops");
    }
    cs_status st_ = CS_OK;
    if (pn->sum_value >= 0 && dnnl_post_ops_append_sum(po, 1.f) != dnnl_success)
        st_ = cs_errorf(err, CS_EBACKEND, "sum post-op");
    if (st_ == CS_OK) st_ = append_act_postops(po, pn->fused, pn->nfused, err);
    if (st_ == CS_OK) st_ = cs_dnnl_check(dnnl_primitive_attr_set_post_ops(attr, po), "post-ops", err);
    if (st_ == CS_OK) st_ = cs_dnnl_user_scratchpad(attr, err);
    /* At batch 1, 3x3 stride-1 convolutions run Winograd F(4x4, 3x3) where
     * oneDNN has it for this CPU and these post-ops (AVX-512, fp32 only),
     * else direct: ~2.25x fewer multiplies for those layers, ResNet-50 ~15%
     * faster end to end -- the latency of a lone request -- at the price of
     * weights kept in 6x6 tiles (+50 MB for ResNet-50).  Larger batches stay
     * direct: oneDNN picks another Winograd weight layout for every batch
     * size, which cost ResNet-50 +200 MB over batches 1-8.  The logits stay
     * within the golden tolerance (full-size ResNet-50: max |diff| 1.7e-5 vs
     * 1.5e-5 direct).  CS_NO_WINOGRAD=1 turns it off. */
    dnnl_convolution_desc_t cd;
    dnnl_primitive_desc_t pd = NULL; /* Winograd's, when oneDNN has one; else direct below */
    if (st_ == CS_OK && dt == dnnl_f32 && !p->no_winograd && p->batch == 1 && group == 1 &&
        w->dims[2] == 3 && w->dims[3] == 3 && st[0] == 1 && st[1] == 1 && dil[0] == 0 && dil[1] == 0 &&
        dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_winograd,
                                                   &src_any, &w_any, bv >= 0 ? b_md : NULL, &dst_any,
                                                   st, dil, pl, pr) == dnnl_success &&
        dnnl_primitive_desc_create(&pd, &cd, attr, p->m->eng, NULL) != dnnl_success)
        pd = NULL;
    p->nwinograd += pd != NULL;
    if (st_ == CS_OK && !pd)
        st_ = cs_dnnl_check(dnnl_dilated_convolution_forward_desc_init(
                                &cd, dnnl_forward_inference, dnnl_convolution_direct, &src_any, &w_any,
                                bv >= 0 ? b_md : NULL, &dst_any, st, dil, pl, pr),
                            "convolution desc", err);
    if (st_ == CS_OK && !pd) {
        if (dt == dnnl_f32) st_ = make_prim(p, &cd, attr, &pd, "convolution", err);
        else if (dnnl_primitive_desc_create(&pd, &cd, attr, p->m->eng, NULL) != dnnl_success) pd = NULL;
    }
    dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    *out = pd;
    return st_;
}

/* In bf16 precision, whether Conv ni may write its output in bf16: when
 * nothing but other Convs' inputs reads it, which read it rounded to bf16
 * anyway (the inner convolutions of a ResNet bottleneck).  That saves the
 * reorder to bf16 and half the bytes.  Values that are kept (an
 * explanation's region), summed onto, or shown stay fp32. */
static bool bf16_output(const cs_plan *p, int ni) {
    const pnode *pn = &p->pn[ni];
    int v = pn->out_value;
    if (pn->sum_value >= 0 || v < 0 || !fusable_value(p, v) || v == p->ovr_v ||
        p->m->g.values[v].is_graph_input)
        return false;
    int n = 0;
    for (int i = p->cons_start[v]; i < p->cons_start[v + 1]; i++) {
        int c = p->cons[i];
        const cs_node *cn = &p->m->g.nodes[c];
        if (cn->dead || p->pn[c].skip) continue;
        if (cn->op != CS_OP_CONV || cn->inputs[0] != v || cn->sum_input == v || p->pn[c].sum_value == v)
            return false;
        n++;
    }
    return n > 0;
}

static cs_status plan_conv(cs_plan *p, int ni, const cs_shape *yshape, cs_error *err) {
    cs_node *n = node_of(p, ni);
    pnode *pn = &p->pn[ni];
    int xr = val(p, n->inputs[0]);
    int wv = n->inputs[1], bv = n->ninputs > 2 ? n->inputs[2] : -1;
    /* copies: p->rt moves when tensors are added below */
    const cs_shape xs = p->rt[xr].shape, ws = p->rt[val(p, wv)].shape;
    const cs_shape *x = &xs, *w = &ws;
    dnnl_memory_desc_t w_plain, b_md;
    dnnl_primitive_desc_t pd = NULL;
    cs_status st_ = CS_OK;
    /* bf16 precision: the input and weights are read rounded to bf16, the
     * sums stay fp32 (like torch.autocast on a CPU); a convolution oneDNN
     * has no bf16 kernel for stays fp32 */
    if (cs_model_cpu_bf16(p->m)) {
        dnnl_data_type_t odt = bf16_output(p, ni) ? dnnl_bf16 : dnnl_f32;
        st_ = conv_pd(p, ni, x, w, yshape, dnnl_bf16, odt, &pd, &w_plain, &b_md, err);
        if (st_ == CS_OK && !pd && odt == dnnl_bf16)
            st_ = conv_pd(p, ni, x, w, yshape, dnnl_bf16, dnnl_f32, &pd, &w_plain, &b_md, err);
        p->nbf16 += pd != NULL;
    }
    if (st_ == CS_OK && !pd) st_ = conv_pd(p, ni, x, w, yshape, dnnl_f32, dnnl_f32, &pd, &w_plain, &b_md, err);
    if (st_ != CS_OK) return cs_error_prefix(err, "node '%s' (Conv)", n->name);

    const dnnl_memory_desc_t *src_md = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *wt_md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *dst_md = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    int xin;
    const void *wdata;
    cs_status s2 = rt_as(p, xr, src_md, &xin, err);
    if (s2 == CS_OK)
        s2 = weights_for(p, ni, wt_md, p->rt[val(p, wv)].cdata, &w_plain, &wdata, err);
    int yr = -1;
    if (s2 == CS_OK) s2 = bind_output(p, pn->out_value, yshape, &yr, err);
    if (s2 == CS_OK) p->rt[yr].md = *dst_md;
    if (s2 == CS_OK && pn->sum_value >= 0 && sum_in_place(p, ni, pn->sum_value, xin, dst_md)) {
        /* The sum post-op accumulates onto dst: when this Add is the
         * addend's last reader, dst simply is the addend's buffer. */
        p->rt[yr].alias = rt_root(p, val(p, pn->sum_value));
    } else if (s2 == CS_OK && pn->sum_value >= 0) {
        /* Otherwise copy the addend into dst first. */
        int ar = val(p, pn->sum_value);
        dnnl_primitive_desc_t rpd;
        s2 = cs_dnnl_check(dnnl_reorder_primitive_desc_create(&rpd, &p->rt[ar].md, p->m->eng,
                                                              dst_md, p->m->eng, p->uattr),
                           "reorder", err);
        if (s2 == CS_OK) {
            step *rs = new_step(p, ST_PRIM, -1);
            if (!rs) s2 = cs_errorf(err, CS_ENOMEM, "out of memory");
            else {
                add_arg(rs, DNNL_ARG_FROM, p, ar, NULL);
                add_arg(rs, DNNL_ARG_TO, p, yr, NULL);
                s2 = finish_prim(p, rs, rpd, "reorder", err);
            }
        }
    }
    if (s2 != CS_OK) {
        dnnl_primitive_desc_destroy(pd);
        return s2;
    }
    step *s = new_step(p, ST_PRIM, ni);
    if (!s) {
        dnnl_primitive_desc_destroy(pd);
        return cs_errorf(err, CS_ENOMEM, "out of memory");
    }
    add_arg(s, DNNL_ARG_SRC, p, xin, NULL);
    add_fixed_arg(s, DNNL_ARG_WEIGHTS, wdata, wt_md);
    if (bv >= 0) add_fixed_arg(s, DNNL_ARG_BIAS, p->rt[val(p, bv)].cdata, &b_md);
    add_arg(s, DNNL_ARG_DST, p, yr, NULL);
    p->flops += 2.0 * (double)cs_shape_numel(yshape) * (double)(w->dims[1] * w->dims[2] * w->dims[3]);
    return finish_prim(p, s, pd, "convolution", err);
}

static cs_status plan_pool(cs_plan *p, int ni, const cs_shape *yshape, cs_error *err) {
    cs_node *n = &p->m->g.nodes[ni];
    int xr = val(p, n->inputs[0]);
    const cs_shape xs = p->rt[xr].shape, *x = &xs;
    dnnl_dims_t st = {1, 1}, ker, dil = {0, 0}, pl = {0, 0}, pr = {0, 0};
    dnnl_alg_kind_t alg;
    bool global = n->op == CS_OP_GLOBALAVGPOOL || n->op == CS_OP_GLOBALMAXPOOL ||
                  n->op == CS_OP_REDUCEMEAN;
    if (global) {
        ker[0] = x->dims[2];
        ker[1] = x->dims[3];
        alg = n->op == CS_OP_GLOBALMAXPOOL ? dnnl_pooling_max : dnnl_pooling_avg_exclude_padding;
    } else {
        const int64_t *k, *s, *pads, *d;
        cs_attr_ints(n, "kernel_shape", &k);
        int ns = cs_attr_ints(n, "strides", &s);
        int np = cs_attr_ints(n, "pads", &pads);
        int nd = cs_attr_ints(n, "dilations", &d);
        for (int i = 0; i < 2; i++) {
            ker[i] = k[i];
            st[i] = ns == 2 ? s[i] : 1;
            dil[i] = nd == 2 ? d[i] - 1 : 0;
            pl[i] = np == 4 ? pads[i] : 0;
            pr[i] = (yshape->dims[2 + i] - 1) * st[i] + (ker[i] - 1) * (dil[i] + 1) + 1 -
                    x->dims[2 + i] - pl[i];
        }
        alg = n->op == CS_OP_MAXPOOL ? dnnl_pooling_max
              : cs_attr_int(n, "count_include_pad", 0) ? dnnl_pooling_avg_include_padding
                                                       : dnnl_pooling_avg_exclude_padding;
    }
    /* Output is always N,C,OH,OW here; ReduceMean with keepdims=0 and the
     * like view it with their own shape afterwards (plain layout then). */
    dnnl_dims_t yd = {x->dims[0], x->dims[1], global ? 1 : yshape->dims[2],
                      global ? 1 : yshape->dims[3]};
    cs_shape y4 = {.dtype = CS_DT_FLOAT, .ndim = 4, .dims = {yd[0], yd[1], yd[2], yd[3]}};
    bool reshaped = !cs_shape_equal(&y4, yshape);
    dnnl_memory_desc_t dst_md;
    if (reshaped) plain_md(&dst_md, &y4);
    else DNNL_TRY(dnnl_memory_desc_init_by_tag(&dst_md, 4, yd, dnnl_f32, dnnl_format_tag_any), "md");
    int xin = xr;
    if (reshaped) { /* the view must be plain, so make the source plain too */
        cs_status s0 = rt_plain(p, xr, &xin, err);
        if (s0 != CS_OK) return s0;
    }
    dnnl_pooling_v2_desc_t pdsc;
    DNNL_TRY(dnnl_pooling_v2_forward_desc_init(&pdsc, dnnl_forward_inference, alg, &p->rt[xin].md,
                                               &dst_md, st, ker, dil, pl, pr),
             "pooling desc");
    dnnl_primitive_desc_t pd;
    cs_status s1 = make_prim(p, &pdsc, NULL, &pd, "pooling", err);
    if (s1 != CS_OK) return cs_error_prefix(err, "node '%s' (%s)", n->name, n->op_type);
    const dnnl_memory_desc_t *dmd = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    int yr = -1;
    step *s;
    cs_status so = open_step(p, ni, n->outputs[0], yshape, reshaped ? NULL : dmd, pd, &yr, &s, err);
    if (so != CS_OK) return so;
    add_arg(s, DNNL_ARG_SRC, p, xin, NULL);
    add_arg(s, DNNL_ARG_DST, p, yr, dmd);
    return finish_prim(p, s, pd, "pooling", err);
}

/* Inference BatchNormalization is a per-channel affine map, y = x·s + t
 * with s = γ/√(σ²+ε), t = β − μ·s: one binary multiply with an add and the
 * fused Relu as post-ops.  (oneDNN's own batch norm has no fast kernel for
 * the NHWC tensors its convolutions produce; this runs at memory speed.) */
static cs_status plan_batchnorm(cs_plan *p, int ni, const cs_shape *yshape, cs_error *err) {
    cs_node *n = node_of(p, ni);
    int xr = val(p, n->inputs[0]);
    int64_t C = yshape->dims[1];
    float *sc = cs_arena_alloc(&p->consts, (size_t)C * sizeof(float));
    float *sh = cs_arena_alloc(&p->consts, (size_t)C * sizeof(float));
    if (!sc || !sh) return cs_errorf(err, CS_ENOMEM, "out of memory");
    const float *gamma = p->rt[val(p, n->inputs[1])].cdata, *beta = p->rt[val(p, n->inputs[2])].cdata;
    const float *mean = p->rt[val(p, n->inputs[3])].cdata, *var = p->rt[val(p, n->inputs[4])].cdata;
    double eps = cs_attr_float(n, "epsilon", 1e-5f);
    for (int64_t c = 0; c < C; c++) {
        double k = (double)gamma[c] / sqrt((double)var[c] + eps);
        sc[c] = (float)k;
        sh[c] = (float)((double)beta[c] - (double)mean[c] * k);
    }
    cs_shape cs_ = {.dtype = CS_DT_FLOAT, .ndim = yshape->ndim};
    for (int i = 0; i < yshape->ndim; i++) cs_.dims[i] = i == 1 ? C : 1;
    dnnl_memory_desc_t cmd;
    plain_md(&cmd, &cs_);
    dnnl_binary_desc_t bd;
    DNNL_TRY(dnnl_binary_desc_init(&bd, dnnl_binary_mul, &p->rt[xr].md, &cmd, &p->rt[xr].md),
             "batchnorm desc");
    dnnl_primitive_attr_t attr;
    dnnl_post_ops_t po;
    DNNL_TRY(dnnl_primitive_attr_create(&attr), "attr");
    DNNL_TRY(dnnl_post_ops_create(&po), "post-ops");
    cs_status s1 = cs_dnnl_check(dnnl_post_ops_append_binary(po, dnnl_binary_add, &cmd), "post-op", err);
    if (s1 == CS_OK && p->pn[ni].bn_relu)
        s1 = cs_dnnl_check(dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_relu, 0, 0), "post-op", err);
    if (s1 == CS_OK) s1 = cs_dnnl_check(dnnl_primitive_attr_set_post_ops(attr, po), "post-ops", err);
    if (s1 == CS_OK) s1 = cs_dnnl_user_scratchpad(attr, err);
    dnnl_primitive_desc_t pd = NULL;
    if (s1 == CS_OK) s1 = make_prim(p, &bd, attr, &pd, "batch normalization", err);
    dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    if (s1 != CS_OK) return cs_error_prefix(err, "node '%s' (BatchNormalization)", n->name);
    int yr = -1;
    step *s;
    cs_status so = open_step(p, ni, p->pn[ni].out_value, yshape, &p->rt[xr].md, pd, &yr, &s, err);
    if (so != CS_OK) return so;
    add_arg(s, DNNL_ARG_SRC_0, p, xr, NULL);
    add_fixed_arg(s, DNNL_ARG_SRC_1, sc, &cmd);
    add_fixed_arg(s, DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, sh, &cmd);
    add_arg(s, DNNL_ARG_DST, p, yr, NULL);
    return finish_prim(p, s, pd, "batch normalization", err);
}

static bool eltwise_alg(const cs_plan *p, const cs_node *n, dnnl_alg_kind_t *alg, float *a,
                        float *b) {
    cs_fused_act f;
    *a = *b = 0;
    if (act_of(p, n, &f)) {
        switch (f.kind) {
        case CS_ACT_RELU: *alg = dnnl_eltwise_relu; return true;
        case CS_ACT_LEAKYRELU: *alg = dnnl_eltwise_relu; *a = f.alpha; return true;
        case CS_ACT_CLIP: *alg = dnnl_eltwise_clip_v2; *a = f.alpha; *b = f.beta; return true;
        case CS_ACT_SIGMOID: *alg = dnnl_eltwise_logistic; return true;
        case CS_ACT_TANH: *alg = dnnl_eltwise_tanh; return true;
        case CS_ACT_HARDSWISH: *alg = dnnl_eltwise_hardswish; return true;
        default: return false;
        }
    }
    switch (n->op) {
    case CS_OP_SQRT: *alg = dnnl_eltwise_sqrt; return true;
    case CS_OP_EXP: *alg = dnnl_eltwise_exp; return true;
    case CS_OP_GELU: *alg = dnnl_eltwise_gelu_erf; return true;
    default: return false;
    }
}

static cs_status plan_eltwise(cs_plan *p, int ni, dnnl_alg_kind_t alg, float a, float b,
                              const cs_shape *yshape, cs_error *err) {
    cs_node *n = &p->m->g.nodes[ni];
    int xr = val(p, n->inputs[0]);
    dnnl_eltwise_desc_t ed;
    DNNL_TRY(dnnl_eltwise_forward_desc_init(&ed, dnnl_forward_inference, alg, &p->rt[xr].md, a, b),
             "eltwise desc");
    dnnl_primitive_desc_t pd;
    cs_status s1 = make_prim(p, &ed, NULL, &pd, "eltwise", err);
    if (s1 != CS_OK) return cs_error_prefix(err, "node '%s' (%s)", n->name, n->op_type);
    int yr = -1;
    step *s;
    cs_status so = open_step(p, ni, n->outputs[0], yshape, &p->rt[xr].md, pd, &yr, &s, err);
    if (so != CS_OK) return so;
    add_arg(s, DNNL_ARG_SRC, p, xr, NULL);
    add_arg(s, DNNL_ARG_DST, p, yr, NULL);
    return finish_prim(p, s, pd, "eltwise", err);
}

/* Binary op with numpy broadcasting, when oneDNN can do it: src0 has the
 * output's shape, src1 broadcasts.  Returns CS_EUNSUPPORTED to ask for the
 * reference kernel instead. */
static cs_status plan_binary(cs_plan *p, int ni, const cs_shape *yshape, cs_error *err) {
    cs_node *n = &p->m->g.nodes[ni];
    int a = val(p, n->inputs[0]), b = val(p, n->inputs[1]);
    bool commutative = n->op == CS_OP_ADD || n->op == CS_OP_MUL;
    if (p->rt[a].cdata && p->rt[b].cdata) return CS_EUNSUPPORTED;
    if (!cs_shape_equal(&p->rt[a].shape, yshape) || p->rt[a].cdata) {
        if (!commutative) return CS_EUNSUPPORTED;
        int t = a;
        a = b;
        b = t;
    }
    if (!cs_shape_equal(&p->rt[a].shape, yshape) || p->rt[a].cdata) return CS_EUNSUPPORTED;
    if (p->rt[a].shape.dtype != CS_DT_FLOAT || p->rt[b].shape.dtype != CS_DT_FLOAT)
        return CS_EUNSUPPORTED;
    dnnl_alg_kind_t alg = n->op == CS_OP_ADD   ? dnnl_binary_add
                          : n->op == CS_OP_SUB ? dnnl_binary_sub
                          : n->op == CS_OP_MUL ? dnnl_binary_mul
                                               : dnnl_binary_div;
    /* src1: same rank as dst (leading 1s); same layout as src0 when the
     * shapes match, plain otherwise. */
    int nd = yshape->ndim;
    const cs_shape bsh = p->rt[b].shape, *bs = &bsh;
    cs_shape b2 = {.dtype = CS_DT_FLOAT, .ndim = nd};
    for (int i = 0; i < nd; i++) {
        int j = i - (nd - bs->ndim);
        b2.dims[i] = j >= 0 ? bs->dims[j] : 1;
    }
    int bin = b;
    dnnl_memory_desc_t b_md;
    cs_status s0 = CS_OK;
    if (cs_shape_equal(&b2, yshape) && !p->rt[b].cdata) {
        s0 = rt_as(p, b, &p->rt[a].md, &bin, err);
        b_md = p->rt[a].md;
    } else {
        s0 = rt_plain(p, b, &bin, err);
        plain_md(&b_md, &b2);
    }
    if (s0 != CS_OK) return s0;
    dnnl_binary_desc_t bd;
    DNNL_TRY(dnnl_binary_desc_init(&bd, alg, &p->rt[a].md, &b_md, &p->rt[a].md), "binary desc");
    dnnl_primitive_desc_t pd;
    if (dnnl_primitive_desc_create(&pd, &bd, p->uattr, p->m->eng, NULL) != dnnl_success)
        return CS_EUNSUPPORTED;
    int yr = -1;
    step *s;
    cs_status so = open_step(p, ni, n->outputs[0], yshape, &p->rt[a].md, pd, &yr, &s, err);
    if (so != CS_OK) return so;
    add_arg(s, DNNL_ARG_SRC_0, p, a, NULL);
    if (p->rt[bin].cdata) add_fixed_arg(s, DNNL_ARG_SRC_1, p->rt[bin].cdata, &b_md);
    else add_arg(s, DNNL_ARG_SRC_1, p, bin, &b_md);
    add_arg(s, DNNL_ARG_DST, p, yr, NULL);
    return finish_prim(p, s, pd, "binary", err);
}

/* Gemm (alpha = beta = 1, transA = 0, constant B and C) as inner product. */
static cs_status plan_gemm(cs_plan *p, int ni, const cs_shape *yshape, cs_error *err) {
    cs_node *n = &p->m->g.nodes[ni];
    if (cs_attr_float(n, "alpha", 1.f) != 1.f || cs_attr_float(n, "beta", 1.f) != 1.f ||
        cs_attr_int(n, "transA", 0) != 0 || n->ninputs < 2 || !is_const_value(p, n->inputs[1]))
        return CS_EUNSUPPORTED;
    int cv = n->ninputs > 2 ? n->inputs[2] : -1;
    int64_t M = yshape->dims[0], N = yshape->dims[1];
    if (cv >= 0 && (!is_const_value(p, cv) || cs_shape_numel(&p->rt[val(p, cv)].shape) != N))
        return CS_EUNSUPPORTED;
    int ar;
    cs_status s0 = rt_plain(p, val(p, n->inputs[0]), &ar, err);
    if (s0 != CS_OK) return s0;
    int64_t K = p->rt[ar].shape.dims[1];
    bool transB = cs_attr_int(n, "transB", 0) != 0;
    dnnl_memory_desc_t src_md, w_any, w_src, b_md, dst_md;
    dnnl_dims_t sd = {M, K}, wd = {N, K}, bd = {N}, dd = {M, N};
    dnnl_memory_desc_init_by_tag(&src_md, 2, sd, dnnl_f32, dnnl_ab);
    dnnl_memory_desc_init_by_tag(&w_any, 2, wd, dnnl_f32, dnnl_format_tag_any);
    /* B is N×K when transposed, else K×N: describe it as N×K either way. */
    dnnl_memory_desc_init_by_tag(&w_src, 2, wd, dnnl_f32, transB ? dnnl_ab : dnnl_ba);
    dnnl_memory_desc_init_by_tag(&b_md, 1, bd, dnnl_f32, dnnl_a);
    dnnl_memory_desc_init_by_tag(&dst_md, 2, dd, dnnl_f32, dnnl_ab);
    dnnl_inner_product_desc_t ipd;
    DNNL_TRY(dnnl_inner_product_forward_desc_init(&ipd, dnnl_forward_inference, &src_md, &w_any,
                                                  cv >= 0 ? &b_md : NULL, &dst_md),
             "inner product desc");
    dnnl_primitive_desc_t pd;
    cs_status s1 = make_prim(p, &ipd, NULL, &pd, "inner product", err);
    if (s1 != CS_OK) return cs_error_prefix(err, "node '%s' (Gemm)", n->name);
    const dnnl_memory_desc_t *wt = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const void *wdata;
    int yr = -1;
    s1 = weights_for(p, ni, wt, p->rt[val(p, n->inputs[1])].cdata, &w_src, &wdata, err);
    if (s1 == CS_OK) s1 = bind_output(p, n->outputs[0], yshape, &yr, err);
    step *s = s1 == CS_OK ? new_step(p, ST_PRIM, ni) : NULL;
    if (!s) {
        dnnl_primitive_desc_destroy(pd);
        return s1 != CS_OK ? s1 : cs_errorf(err, CS_ENOMEM, "out of memory");
    }
    add_arg(s, DNNL_ARG_SRC, p, ar, &src_md);
    add_fixed_arg(s, DNNL_ARG_WEIGHTS, wdata, wt);
    if (cv >= 0) add_fixed_arg(s, DNNL_ARG_BIAS, p->rt[val(p, cv)].cdata, &b_md);
    add_arg(s, DNNL_ARG_DST, p, yr, &dst_md);
    p->flops += 2.0 * (double)(M * N * K);
    return finish_prim(p, s, pd, "inner product", err);
}

/* MatMul on plain tensors (batch broadcasting as numpy), ranks 2..6. */
static cs_status plan_matmul(cs_plan *p, int ni, const cs_shape *yshape, cs_error *err) {
    cs_node *n = &p->m->g.nodes[ni];
    int a, b;
    cs_status s0 = rt_plain(p, val(p, n->inputs[0]), &a, err);
    if (s0 == CS_OK) s0 = rt_plain(p, val(p, n->inputs[1]), &b, err);
    if (s0 != CS_OK) return s0;
    const cs_shape ash = p->rt[a].shape, bsh = p->rt[b].shape, *as = &ash, *bs = &bsh;
    int nd = yshape->ndim;
    if (as->ndim < 2 || bs->ndim < 2 || nd > 6 || as->dtype != CS_DT_FLOAT) return CS_EUNSUPPORTED;
    cs_shape a2 = {.dtype = CS_DT_FLOAT, .ndim = nd}, b2 = a2;
    for (int i = 0; i < nd; i++) {
        int ja = i - (nd - as->ndim), jb = i - (nd - bs->ndim);
        a2.dims[i] = ja >= 0 ? as->dims[ja] : 1;
        b2.dims[i] = jb >= 0 ? bs->dims[jb] : 1;
    }
    dnnl_memory_desc_t amd, bmd, ymd;
    plain_md(&amd, &a2);
    plain_md(&bmd, &b2);
    plain_md(&ymd, yshape);
    dnnl_matmul_desc_t mdsc;
    DNNL_TRY(dnnl_matmul_desc_init(&mdsc, &amd, &bmd, NULL, &ymd), "matmul desc");
    dnnl_primitive_desc_t pd;
    if (dnnl_primitive_desc_create(&pd, &mdsc, p->uattr, p->m->eng, NULL) != dnnl_success)
        return CS_EUNSUPPORTED;
    int yr = -1;
    step *s;
    cs_status s1 = open_step(p, ni, n->outputs[0], yshape, NULL, pd, &yr, &s, err);
    if (s1 != CS_OK) return s1;
    if (p->rt[a].cdata) add_fixed_arg(s, DNNL_ARG_SRC, p->rt[a].cdata, &amd);
    else add_arg(s, DNNL_ARG_SRC, p, a, &amd);
    if (p->rt[b].cdata) add_fixed_arg(s, DNNL_ARG_WEIGHTS, p->rt[b].cdata, &bmd);
    else add_arg(s, DNNL_ARG_WEIGHTS, p, b, &bmd);
    add_arg(s, DNNL_ARG_DST, p, yr, &ymd);
    p->flops += 2.0 * (double)cs_shape_numel(yshape) * (double)as->dims[as->ndim - 1];
    return finish_prim(p, s, pd, "matmul", err);
}

static cs_status plan_concat(cs_plan *p, int ni, const cs_shape *yshape, cs_error *err) {
    cs_node *n = &p->m->g.nodes[ni];
    int nd = yshape->ndim;
    int64_t axis = cs_attr_int(n, "axis", 0);
    if (axis < 0) axis += nd;
    if (n->ninputs > MAX_ARGS - 1 || yshape->dtype != CS_DT_FLOAT) return CS_EUNSUPPORTED;
    dnnl_memory_desc_t mds[MAX_ARGS], dst_nhwc;
    int rts[MAX_ARGS];
    /* A channel concat of 4-D tensors is done in NHWC, the layout oneDNN's
     * convolutions produce here: oneDNN then copies contiguous runs
     * ("simple" concat) instead of its reference kernel for mixed layouts. */
    bool nhwc = nd == 4 && axis == 1;
    for (int i = 0; i < n->ninputs; i++) {
        int r = val(p, n->inputs[i]);
        if (r < 0 || p->rt[r].cdata || p->rt[r].shape.ndim != nd) return CS_EUNSUPPORTED;
        if (nhwc) {
            const int64_t *d = p->rt[r].shape.dims;
            dnnl_dims_t dd = {d[0], d[1], d[2], d[3]};
            dnnl_memory_desc_init_by_tag(&mds[i], 4, dd, dnnl_f32, dnnl_acdb);
            cs_status s0 = rt_as(p, r, &mds[i], &r, err);
            if (s0 != CS_OK) return s0;
        }
        rts[i] = r;
        mds[i] = p->rt[r].md;
    }
    if (nhwc) {
        dnnl_dims_t dd = {yshape->dims[0], yshape->dims[1], yshape->dims[2], yshape->dims[3]};
        dnnl_memory_desc_init_by_tag(&dst_nhwc, 4, dd, dnnl_f32, dnnl_acdb);
    }
    dnnl_primitive_desc_t pd;
    if (dnnl_concat_primitive_desc_create(&pd, nhwc ? &dst_nhwc : NULL, n->ninputs, (int)axis, mds,
                                          p->uattr, p->m->eng) != dnnl_success)
        return CS_EUNSUPPORTED;
    const dnnl_memory_desc_t *dmd = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    int yr = -1;
    step *s;
    cs_status s1 = open_step(p, ni, n->outputs[0], yshape, NULL, pd, &yr, &s, err);
    if (s1 != CS_OK) return s1;
    p->rt[yr].md = *dmd;
    for (int i = 0; i < n->ninputs; i++) add_arg(s, DNNL_ARG_MULTIPLE_SRC + i, p, rts[i], NULL);
    add_arg(s, DNNL_ARG_DST, p, yr, NULL);
    return finish_prim(p, s, pd, "concat", err);
}

/* Ops that only reinterpret a dense tensor: the output views the input. */
static bool is_view_op(const cs_node *n) {
    switch (n->op) {
    case CS_OP_RESHAPE: case CS_OP_FLATTEN: case CS_OP_SQUEEZE: case CS_OP_UNSQUEEZE:
    case CS_OP_IDENTITY: case CS_OP_DROPOUT:
        return true;
    default: return false;
    }
}

static cs_status plan_view(cs_plan *p, int ni, const cs_shape *yshape, cs_error *err) {
    cs_node *n = &p->m->g.nodes[ni];
    int x;
    cs_status s0 = rt_plain(p, val(p, n->inputs[0]), &x, err);
    if (s0 != CS_OK) return s0;
    int yr = -1;
    s0 = bind_output(p, n->outputs[0], yshape, &yr, err);
    if (s0 != CS_OK) return s0;
    p->rt[yr].alias = x;
    return CS_OK;
}

static cs_status plan_ref(cs_plan *p, int ni, const cs_shape *outs, cs_error *err) {
    cs_node *n = node_of(p, ni);
    pnode *pn = &p->pn[ni];
    if (n->ninputs + 1 > MAX_REF_IO || n->noutputs > MAX_REF_IO)
        return cs_errorf(err, CS_EUNSUPPORTED, "node '%s' has too many inputs", n->name);
    int in[MAX_REF_IO], out[MAX_REF_IO];
    for (int i = 0; i < n->ninputs; i++) {
        in[i] = -1;
        if (n->inputs[i] < 0) continue;
        cs_status s0 = rt_plain(p, val(p, n->inputs[i]), &in[i], err);
        if (s0 != CS_OK) return s0;
    }
    int nin = n->ninputs;
    if (pn->sum_value >= 0) {
        cs_status s0 = rt_plain(p, val(p, pn->sum_value), &in[nin++], err);
        if (s0 != CS_OK) return s0;
    }
    for (int o = 0; o < n->noutputs; o++) {
        out[o] = -1;
        int v = o == 0 ? pn->out_value : n->outputs[o];
        if (v < 0) {
            /* an omitted optional output still needs somewhere to go */
            out[o] = new_rt(p, &outs[o]);
            if (out[o] < 0) return cs_errorf(err, CS_ENOMEM, "out of memory");
            continue;
        }
        cs_status s0 = bind_output(p, v, &outs[o], &out[o], err);
        if (s0 != CS_OK) return s0;
    }
    step *s = new_step(p, ST_REF, ni);
    if (!s) return cs_errorf(err, CS_ENOMEM, "out of memory");
    s->ref_node = *n;
    s->ref_node.nfused = pn->nfused;
    memcpy(s->ref_node.fused, pn->fused, sizeof pn->fused);
    s->ref_node.sum_input = pn->sum_value;
    s->nin = nin;
    s->nout = n->noutputs;
    memcpy(s->in_rt, in, sizeof(int) * (size_t)nin);
    memcpy(s->out_rt, out, sizeof(int) * (size_t)n->noutputs);
    if (n->op == CS_OP_CONV || n->op == CS_OP_GEMM || n->op == CS_OP_MATMUL) {
        /* counted for inspect's FLOPs even on the slow path */
        const cs_shape *w = &p->rt[in[1]].shape;
        int64_t k = 1;
        for (int i = 1; i < w->ndim; i++) k *= w->dims[i];
        p->flops += 2.0 * (double)cs_shape_numel(&outs[0]) * (double)k;
    }
    return CS_OK;
}

/* Evaluates node ni now: all its inputs are constant for this batch. */
static cs_status fold_node(cs_plan *p, int ni, const cs_shape *outs, cs_error *err) {
    cs_node *n = node_of(p, ni);
    const cs_shape *in[MAX_REF_IO];
    const void *ind[MAX_REF_IO];
    void *outd[MAX_REF_IO];
    if (n->ninputs > MAX_REF_IO || n->noutputs > MAX_REF_IO)
        return cs_errorf(err, CS_EUNSUPPORTED, "node '%s' has too many inputs", n->name);
    for (int i = 0; i < n->ninputs; i++) {
        int r = val(p, n->inputs[i]);
        in[i] = r >= 0 ? &p->rt[r].shape : NULL;
        ind[i] = r >= 0 ? p->rt[r].cdata : NULL;
    }
    /* Shape reads only its input's shape, which is known here. */
    static const float no_data;
    if (n->op == CS_OP_SHAPE && !ind[0]) ind[0] = &no_data;
    for (int o = 0; o < n->noutputs; o++) {
        int64_t ne = cs_shape_numel(&outs[o]);
        size_t es = cs_dtype_size(outs[o].dtype);
        if (ne < 0 || !es)
            return cs_errorf(err, CS_EINTERNAL, "node '%s': folded output has no size", n->name);
        outd[o] = cs_arena_alloc(&p->consts, (size_t)ne * es + 1);
        if (!outd[o]) return cs_errorf(err, CS_ENOMEM, "out of memory folding constants");
    }
    cs_status st = cs_op_ref_run(&p->m->g, n, in, ind, outs, outd, err);
    if (st != CS_OK) return st;
    for (int o = 0; o < n->noutputs; o++) {
        if (n->outputs[o] < 0) continue;
        int r = new_rt(p, &outs[o]);
        if (r < 0) return cs_errorf(err, CS_ENOMEM, "out of memory");
        p->rt[r].cdata = outd[o];
        p->val_rt[n->outputs[o]] = r;
    }
    p->pn[ni].skip = true;
    return CS_OK;
}

static cs_status plan_node(cs_plan *p, int ni, cs_error *err) {
    cs_graph *g = &p->m->g;
    cs_node *n = node_of(p, ni);
    const cs_shape *in[MAX_REF_IO];
    const void *ind[MAX_REF_IO];
    cs_shape outs[MAX_REF_IO];
    if (n->ninputs > MAX_REF_IO || n->noutputs > MAX_REF_IO)
        return cs_errorf(err, CS_EUNSUPPORTED, "node '%s' has too many inputs/outputs", n->name);
    bool all_const = true;
    for (int i = 0; i < n->ninputs; i++) {
        int r = val(p, n->inputs[i]);
        if (n->inputs[i] >= 0 && r < 0)
            return cs_errorf(err, CS_EINTERNAL, "node '%s': input %d not planned", n->name, i);
        in[i] = r >= 0 ? &p->rt[r].shape : NULL;
        ind[i] = r >= 0 ? p->rt[r].cdata : NULL;
        if (r >= 0 && !p->rt[r].cdata) all_const = false;
    }
    memset(outs, 0, sizeof(cs_shape) * (size_t)n->noutputs);
    cs_status st = cs_op_infer(g, n, in, ind, outs, err);
    if (st != CS_OK) return st;

    if (n->op == CS_OP_SHAPE && cs_shape_numel(in[0]) >= 0) all_const = true;
    if (all_const) return fold_node(p, ni, outs, err);

    plan_fusion(p, ni, &outs[0]);
    p->nkernels++;
    st = CS_EUNSUPPORTED;
    dnnl_alg_kind_t alg;
    float a, b;
    const cs_shape *y = &outs[0];
    bool f32 = y->dtype == CS_DT_FLOAT;
    switch (n->op) {
    case CS_OP_CONV:
        if (y->ndim == 4 && is_const_value(p, n->inputs[1]) &&
            (n->ninputs < 3 || n->inputs[2] < 0 || is_const_value(p, n->inputs[2])))
            st = plan_conv(p, ni, y, err);
        break;
    case CS_OP_MAXPOOL: case CS_OP_AVGPOOL:
        if (y->ndim == 4 && !(n->op == CS_OP_AVGPOOL && cs_attr_int(n, "ceil_mode", 0) &&
                              cs_attr_int(n, "count_include_pad", 0)))
            st = plan_pool(p, ni, y, err);
        break;
    case CS_OP_GLOBALAVGPOOL: case CS_OP_GLOBALMAXPOOL:
        if (y->ndim == 4) st = plan_pool(p, ni, y, err);
        break;
    case CS_OP_REDUCEMEAN: {
        const int64_t *ax;
        int na = cs_attr_ints(n, "axes", &ax);
        if (in[0]->ndim == 4 && na == 2 && ((ax[0] == 2 && ax[1] == 3) || (ax[0] == -2 && ax[1] == -1)))
            st = plan_pool(p, ni, y, err);
        break;
    }
    case CS_OP_BATCHNORM: {
        bool consts = true;
        for (int i = 1; i < 5 && i < n->ninputs; i++) consts = consts && is_const_value(p, n->inputs[i]);
        if (n->ninputs == 5 && consts && f32) st = plan_batchnorm(p, ni, y, err);
        break;
    }
    case CS_OP_ADD: case CS_OP_SUB: case CS_OP_MUL: case CS_OP_DIV:
        if (f32) st = plan_binary(p, ni, y, err);
        break;
    case CS_OP_GEMM:
        if (f32) st = plan_gemm(p, ni, y, err);
        break;
    case CS_OP_MATMUL:
        if (f32) st = plan_matmul(p, ni, y, err);
        break;
    case CS_OP_CONCAT:
        st = plan_concat(p, ni, y, err);
        break;
    default:
        if (is_view_op(n) && (n->noutputs == 1 || n->outputs[1] < 0)) {
            st = plan_view(p, ni, y, err);
        } else if (f32 && n->ninputs >= 1 && eltwise_alg(p, n, &alg, &a, &b)) {
            st = plan_eltwise(p, ni, alg, a, b, y, err);
        }
        break;
    }
    if (st == CS_EUNSUPPORTED) st = plan_ref(p, ni, outs, err);
    return st;
}

/* ---- memory ------------------------------------------------------------------ */

typedef struct interval {
    int r;
    size_t size;
    int first, last;
} interval;

static int by_size_desc(const void *a, const void *b) {
    const interval *x = a, *y = b;
    if (x->size != y->size) return x->size < y->size ? 1 : -1;
    return x->first - y->first;
}

/* Greedy offset assignment: biggest tensors first, each at the lowest
 * offset that does not overlap a placed tensor alive at the same time. */
static cs_status assign_offsets(cs_plan *p, cs_error *err) {
    interval *iv = malloc((size_t)(p->nrt + 1) * sizeof *iv);
    interval *placed = malloc((size_t)(p->nrt + 1) * sizeof *placed);
    int64_t *offs = malloc((size_t)(p->nrt + 1) * sizeof *offs);
    if (!iv || !placed || !offs) {
        free(iv);
        free(placed);
        free(offs);
        return cs_errorf(err, CS_ENOMEM, "out of memory planning memory");
    }
    int n = 0;
    for (int r = 0; r < p->nrt; r++) {
        rt_tensor *t = &p->rt[r];
        if (t->cdata || t->alias >= 0 || t->first < 0) continue;
        t->size = (dnnl_memory_desc_get_size(&t->md) + 63) & ~(size_t)63;
        iv[n++] = (interval){r, t->size, t->first, t->last};
    }
    qsort(iv, (size_t)n, sizeof *iv, by_size_desc);
    size_t total = 0;
    int np = 0;
    for (int i = 0; i < n; i++) {
        /* candidate offsets: 0 and the end of every overlapping placed one */
        int64_t best = -1;
        for (int c = -1; c < np; c++) {
            int64_t off = c < 0 ? 0 : offs[c] + (int64_t)placed[c].size;
            if (c >= 0 && (placed[c].last < iv[i].first || placed[c].first > iv[i].last)) continue;
            if (best >= 0 && off >= best) continue;
            bool ok = true;
            for (int q = 0; q < np && ok; q++) {
                if (placed[q].last < iv[i].first || placed[q].first > iv[i].last) continue;
                if (off < offs[q] + (int64_t)placed[q].size && offs[q] < off + (int64_t)iv[i].size)
                    ok = false;
            }
            if (ok) best = off;
        }
        placed[np] = iv[i];
        offs[np] = best;
        np++;
        p->rt[iv[i].r].offset = best;
        if ((size_t)best + iv[i].size > total) total = (size_t)best + iv[i].size;
    }
    free(iv);
    free(placed);
    free(offs);
    p->arena_size = total;
    /* A tiny malicious file can describe enormous activations; refuse
     * before allocating.  1 GiB per image is far above any classifier. */
    if (total > (size_t)p->batch << 30)
        return cs_errorf(err, CS_ELIMIT, "activations need %zu MiB, more than 1 GiB per image",
                         total >> 20);
    p->arena = aligned_alloc(64, total ? total : 64);
    if (!p->arena) return cs_errorf(err, CS_ENOMEM, "out of memory: activation arena of %zu bytes", total);
    return CS_OK;
}

static void *rt_ptr(cs_plan *p, int r) {
    r = rt_root(p, r);
    if (p->rt[r].cdata) return (void *)p->rt[r].cdata;
    return p->arena + p->rt[r].offset;
}

static cs_status finalize(cs_plan *p, cs_error *err) {
    /* liveness */
    for (int si = 0; si < p->nsteps; si++) {
        step *s = &p->steps[si];
        if (s->kind == ST_PRIM) {
            for (int a = 0; a < s->nargs; a++)
                if (s->args[a].rt >= 0) touch(p, s->args[a].rt, si);
        } else {
            for (int i = 0; i < s->nin; i++)
                if (s->in_rt[i] >= 0) touch(p, s->in_rt[i], si);
            for (int o = 0; o < s->nout; o++)
                if (s->out_rt[o] >= 0) touch(p, s->out_rt[o], si);
        }
    }
    if (!p->in_unused) touch(p, p->in_rt, 0);
    touch(p, p->out_rt, p->nsteps);
    if (p->ovr_rt >= 0) touch(p, p->ovr_rt, 0);
    /* kept values (and their plain copies) live to the end of the run */
    for (int v = 0; v < p->m->g.nvalues; v++) {
        int r = p->val_rt[v];
        if (!p->keep[v] || r < 0 || p->rt[r].cdata) continue;
        touch(p, r, p->nsteps);
        if (p->rt[r].plain >= 0) touch(p, p->rt[r].plain, p->nsteps);
    }
    cs_status st = assign_offsets(p, err);
    if (st != CS_OK) return st;
    for (int si = 0; si < p->nsteps; si++) {
        step *s = &p->steps[si];
        for (int a = 0; a < s->nargs; a++) {
            step_arg *ar = &s->args[a];
            void *ptr = ar->rt >= 0 ? rt_ptr(p, ar->rt) : (void *)ar->fixed;
            DNNL_TRY(dnnl_memory_create(&ar->mem, &ar->md, p->m->eng, ptr), "memory");
        }
    }
    return CS_OK;
}

/* ---- public ------------------------------------------------------------------ */

cs_status cs_plan_build(cs_model *m, int batch, const int *keep, int nkeep, int pack,
                        int override_v, cs_plan **out, cs_error *err) {
    cs_graph *g = &m->g;
    double t_start = cs_now_ms();
    *out = NULL;
    cs_plan *p = calloc(1, sizeof *p);
    if (!p) return cs_errorf(err, CS_ENOMEM, "out of memory");
    p->m = m;
    p->batch = batch;
    p->ovr_v = override_v;
    p->ovr_rt = -1;
    p->no_winograd = !cs_engine_winograd();
    if (dnnl_primitive_attr_create(&p->uattr) != dnnl_success) {
        p->uattr = NULL;
        cs_plan_free(p);
        return cs_errorf(err, CS_EBACKEND, "oneDNN failed in attr");
    }
    cs_status ust = cs_dnnl_user_scratchpad(p->uattr, err);
    if (ust != CS_OK) {
        cs_plan_free(p);
        return ust;
    }
    p->val_rt = malloc((size_t)g->nvalues * sizeof(int));
    p->keep = calloc((size_t)g->nvalues + 1, sizeof(bool));
    p->pn = calloc((size_t)g->nnodes + 1, sizeof(pnode));
    p->cons_start = calloc((size_t)g->nvalues + 2, sizeof(int));
    p->fused_shape = calloc((size_t)g->nvalues + 1, sizeof(cs_shape));
    cs_status st = CS_OK;
    if (!p->val_rt || !p->keep || !p->pn || !p->cons_start || !p->fused_shape) {
        st = cs_errorf(err, CS_ENOMEM, "out of memory");
        goto fail;
    }
    p->pack = pack != 0;
    for (int v = 0; v < g->nvalues; v++) p->val_rt[v] = -1;
    for (int i = 0; i < nkeep; i++)
        if (keep[i] >= 0 && keep[i] < g->nvalues) p->keep[keep[i]] = true;
    /* Convs with a folded BN: unfold where the pre-BN tensor is wanted,
     * else the BN node does not run */
    for (int ni = 0; ni < g->nnodes; ni++) {
        cs_node *c = &g->nodes[ni];
        if (c->dead || c->fold_bn < 0) continue;
        if (!p->keep[c->pre_bn_out]) {
            p->pn[c->fold_bn].skip = true;
            continue;
        }
        cs_node *u = cs_graph_unfold_bn(c, &p->consts);
        if (!u) {
            st = cs_errorf(err, CS_ENOMEM, "out of memory");
            goto fail;
        }
        p->pn[ni].unfolded = u;
    }

    /* AblationCAM: what only feeds the layer does not run
     * (cs_graph_prune_for_override: for a late layer nearly the whole
     * network), and the layer becomes a second input, filled by
     * cs_plan_run -- when it is one of the model's layers, whose per-image
     * dims the model knows, and its producer is among what does not run */
    cs_shape ovr_shape = {.dtype = CS_DT_FLOAT, .ndim = 4};
    bool ovr_input = false;
    for (int i = 0; override_v >= 0 && cs_engine_prune_override() && i < m->nlayers; i++)
        if (m->layers[i] == override_v) {
            ovr_shape.dims[0] = batch;
            for (int k = 1; k < 4; k++) ovr_shape.dims[k] = m->layer_dims[i][k];
            const cs_node **run = malloc((size_t)g->nnodes * sizeof *run);
            bool in_read = true;
            st = run ? CS_OK : cs_errorf(err, CS_ENOMEM, "out of memory");
            for (int ni = 0; st == CS_OK && ni < g->nnodes; ni++)
                run[ni] = g->nodes[ni].dead || p->pn[ni].skip ? NULL : node_of(p, ni);
            if (st == CS_OK) st = cs_graph_prune_for_override(g, override_v, p->keep, run, &ovr_input, &in_read, err);
            for (int ni = 0; st == CS_OK && ni < g->nnodes; ni++) p->pn[ni].skip = !run[ni];
            p->in_unused = !in_read;
            free(run);
            if (st != CS_OK) goto fail;
            break;
        }

    /* consumer lists (CSR) over live nodes */
    if ((st = cs_graph_consumers(g, p->cons_start, &p->cons, err)) != CS_OK) goto fail;

    /* constants and the input */
    for (int v = 0; v < g->nvalues; v++) {
        cs_value *cv = &g->values[v];
        if (!cv->data) continue;
        int r = new_rt(p, &cv->shape);
        if (r < 0) {
            st = cs_errorf(err, CS_ENOMEM, "out of memory");
            goto fail;
        }
        p->rt[r].cdata = cv->data;
        p->val_rt[v] = r;
    }
    {
        cs_value *iv = &g->values[g->inputs[0]];
        cs_shape s = iv->shape;
        if (s.ndim < 1) {
            st = cs_errorf(err, CS_EUNSUPPORTED, "graph input '%s' has no known rank", iv->name);
            goto fail;
        }
        if (s.dims[0] < 0 || s.dims[0] == batch) s.dims[0] = batch;
        else {
            st = cs_errorf(err, CS_EINVAL, "the model's input '%s' has a fixed batch of %lld; got %d",
                           iv->name, (long long)s.dims[0], batch);
            goto fail;
        }
        for (int i = 1; i < s.ndim; i++)
            if (s.dims[i] < 0) {
                st = cs_errorf(err, CS_EUNSUPPORTED,
                               "graph input '%s' has a dynamic dim %d; only the batch may be dynamic",
                               iv->name, i);
                goto fail;
            }
        p->in_rt = new_rt(p, &s);
        if (p->in_rt < 0) {
            st = cs_errorf(err, CS_ENOMEM, "out of memory");
            goto fail;
        }
        p->val_rt[g->inputs[0]] = p->in_rt;
    }
    if (ovr_input) {
        p->ovr_rt = new_rt(p, &ovr_shape);
        if (p->ovr_rt < 0) {
            st = cs_errorf(err, CS_ENOMEM, "out of memory");
            goto fail;
        }
        p->val_rt[override_v] = p->ovr_rt;
    }
    for (int ni = 0; ni < g->nnodes; ni++) {
        if (g->nodes[ni].dead || p->pn[ni].skip) continue;
        st = plan_node(p, ni, err);
        if (st != CS_OK) goto fail;
        if (p->ovr_v >= 0 && p->ovr_rt < 0 && p->val_rt[p->ovr_v] >= 0) {
            /* AblationCAM: the caller's values replace the layer before
             * any consumer reads it */
            int r = p->val_rt[p->ovr_v];
            p->ovr_rt = new_rt(p, &p->rt[r].shape);
            if (p->ovr_rt < 0) {
                st = cs_errorf(err, CS_ENOMEM, "out of memory");
                goto fail;
            }
            dnnl_primitive_desc_t rpd;
            st = cs_dnnl_check(dnnl_reorder_primitive_desc_create(&rpd, &p->rt[p->ovr_rt].md, m->eng,
                                                                  &p->rt[r].md, m->eng, p->uattr),
                               "reorder", err);
            step *os = st == CS_OK ? new_step(p, ST_PRIM, -1) : NULL;
            if (st == CS_OK && !os) {
                dnnl_primitive_desc_destroy(rpd);
                st = cs_errorf(err, CS_ENOMEM, "out of memory");
            }
            if (st != CS_OK) goto fail;
            add_arg(os, DNNL_ARG_FROM, p, p->ovr_rt, NULL);
            add_arg(os, DNNL_ARG_TO, p, r, NULL);
            st = finish_prim(p, os, rpd, "reorder", err);
            if (st != CS_OK) goto fail;
        }
    }
    if (p->ovr_v >= 0 && p->ovr_rt < 0) {
        st = cs_errorf(err, CS_EINVAL, "tensor '%s' is not computed by the network",
                       g->values[p->ovr_v].name);
        goto fail;
    }
    {
        int ov = g->outputs[0];
        if (p->val_rt[ov] < 0) {
            st = cs_errorf(err, CS_EINTERNAL, "graph output '%s' was not planned", g->values[ov].name);
            goto fail;
        }
        st = rt_plain(p, p->val_rt[ov], &p->out_rt, err);
        if (st != CS_OK) goto fail;
    }
    /* kept tensors are read back plain; make those copies part of the plan */
    for (int v = 0; v < g->nvalues; v++) {
        if (!p->keep[v] || p->val_rt[v] < 0) continue;
        int pr;
        st = rt_plain(p, p->val_rt[v], &pr, err);
        if (st != CS_OK) goto fail;
    }
    double tf = cs_now_ms();
    st = finalize(p, err);
    if (st != CS_OK) goto fail;
    /* CS_TRACE=1: where load and first-request time goes */
    if (getenv("CS_TRACE")) fprintf(stderr, "plan: nodes %.1f ms, finalize %.1f ms (%d steps, %d Winograd convs, %d bf16 convs, arena %zu KB)\n", tf - t_start, cs_now_ms() - tf, p->nsteps, p->nwinograd, p->nbf16, p->arena_size >> 10);
    *out = p;
    return CS_OK;
fail:
    cs_plan_free(p);
    return st;
}

void cs_plan_free(cs_plan *p) {
    if (!p) return;
    for (int si = 0; si < p->nsteps; si++) {
        step *s = &p->steps[si];
        if (s->prim) dnnl_primitive_destroy(s->prim);
        if (s->scratch) dnnl_memory_destroy(s->scratch);
        for (int a = 0; a < s->nargs; a++)
            if (s->args[a].mem) dnnl_memory_destroy(s->args[a].mem);
        free(s->args);
    }
    free(p->steps);
    free(p->rt);
    free(p->val_rt);
    free(p->keep);
    free(p->pn);
    free(p->cons_start);
    free(p->cons);
    free(p->fused_shape);
    if (p->uattr) dnnl_primitive_attr_destroy(p->uattr);
    free(p->arena);
    cs_arena_free(&p->consts);
    free(p);
}

cs_status cs_plan_run(cs_plan *p, dnnl_stream_t stream, void *scratch, const float *input,
                      const float *override_data, float *output, cs_error *err) {
    rt_tensor *in = &p->rt[p->in_rt];
    if (!p->in_unused) memcpy(rt_ptr(p, p->in_rt), input, (size_t)cs_shape_numel(&in->shape) * sizeof(float));
    if (p->ovr_rt >= 0) {
        if (!override_data) return cs_errorf(err, CS_EINVAL, "this plan needs the layer's values");
        memcpy(rt_ptr(p, p->ovr_rt), override_data,
               (size_t)cs_shape_numel(&p->rt[p->ovr_rt].shape) * sizeof(float));
    }
    dnnl_exec_arg_t args[MAX_ARGS + 1]; /* + the scratchpad */
    const cs_shape *ins[MAX_REF_IO];
    const void *ind[MAX_REF_IO];
    cs_shape outs[MAX_REF_IO];
    void *outd[MAX_REF_IO];
    for (int si = 0; si < p->nsteps; si++) {
        step *s = &p->steps[si];
        if (s->kind == ST_PRIM) {
            for (int a = 0; a < s->nargs; a++) {
                args[a].arg = s->args[a].id;
                args[a].memory = s->args[a].mem;
            }
            dnnl_status_t ds = cs_dnnl_exec(s->prim, stream, s->nargs, args, s->scratch, scratch);
            if (ds != dnnl_success) {
                const char *nm = s->node >= 0 ? p->m->g.nodes[s->node].name : "reorder";
                return cs_errorf(err, CS_EBACKEND, "oneDNN failed running '%s' (status %d)", nm,
                                 (int)ds);
            }
        } else {
            for (int i = 0; i < s->nin; i++) {
                ins[i] = s->in_rt[i] >= 0 ? &p->rt[s->in_rt[i]].shape : NULL;
                ind[i] = s->in_rt[i] >= 0 ? rt_ptr(p, s->in_rt[i]) : NULL;
            }
            for (int o = 0; o < s->nout; o++) {
                outs[o] = p->rt[s->out_rt[o]].shape;
                outd[o] = rt_ptr(p, s->out_rt[o]);
            }
            cs_status st = cs_op_ref_run(&p->m->g, &s->ref_node, ins, ind, outs, outd, err);
            if (st != CS_OK) return st;
        }
    }
    dnnl_stream_wait(stream);
    rt_tensor *o = &p->rt[p->out_rt];
    memcpy(output, rt_ptr(p, p->out_rt), (size_t)cs_shape_numel(&o->shape) * sizeof(float));
    return CS_OK;
}

const cs_shape *cs_plan_shape(const cs_plan *p, int v) {
    int r = p->val_rt[v];
    if (r >= 0) return &p->rt[r].shape;
    return p->fused_shape[v].ndim > 0 ? &p->fused_shape[v] : NULL;
}

const void *cs_plan_value(cs_plan *p, int v) {
    int r = p->val_rt[v];
    if (r < 0) return NULL;
    if (p->rt[r].cdata) return p->rt[r].cdata;
    if (!p->keep[v] && !p->m->g.values[v].is_graph_output) return NULL;
    int pr = p->rt[r].plain >= 0 ? p->rt[r].plain : r;
    if (!md_is_plain(&p->rt[pr].md, &p->rt[pr].shape)) return NULL;
    return rt_ptr(p, pr);
}

bool cs_plan_is_const(const cs_plan *p, int v) {
    return v >= 0 && p->val_rt[v] >= 0 && p->rt[p->val_rt[v]].cdata != NULL;
}

bool cs_plan_node_live(const cs_plan *p, int ni) {
    return !p->m->g.nodes[ni].dead && !p->pn[ni].skip;
}

cs_status cs_plan_read(cs_plan *p, int v, float *out, cs_error *err) {
    const void *src = cs_plan_value(p, v);
    if (!src)
        return cs_errorf(err, CS_ENOTFOUND, "tensor '%s' is not kept by this plan",
                         p->m->g.values[v].name);
    memcpy(out, src, (size_t)cs_shape_numel(cs_plan_shape(p, v)) * sizeof(float));
    return CS_OK;
}

double cs_plan_flops(const cs_plan *p) { return p->flops; }
int cs_plan_num_kernels(const cs_plan *p) { return p->nkernels; }
int cs_plan_batch(const cs_plan *p) { return p->batch; }
