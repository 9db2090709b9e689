/* Backward from the class scores down to the target layers, nothing more.
 *
 * Only input gradients, only for values that depend on a target layer (the
 * set D), only through nodes on a path from D to the output (the region).
 * Gradients are dense C-order float buffers, one per value of D, in one
 * allocation.  Convolutions use oneDNN's backward-data primitive; everything
 * else is a small loop here, written from the op's derivative.  Formulas
 * follow PyTorch's autograd, so maps match it: e.g. Relu passes the
 * gradient where its output is > 0, Clip where min < x < max. */
#include "engine/engine_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct conv_bwd {
    int node;
    dnnl_primitive_t prim, r_in, r_out; /* r_*: reorders plain <-> blocked, may be NULL */
    dnnl_memory_t sc_prim, sc_in, sc_out; /* their scratchpads (see cs_plan_scratch_size), or NULL */
    dnnl_memory_t m_dy_plain, m_dy, m_w, m_dx, m_dx_plain;
    float *dy_blk, *dx_blk, *dx_plain; /* owned scratch (NULL when plain is used) */
} conv_bwd;

struct cs_bwd {
    cs_model *m;
    cs_plan *p;
    int nvalues;
    bool *in_d;        /* [nvalues] value depends on a target layer */
    float **grad;      /* [nvalues] gradient buffer for values in D */
    bool *touched;     /* [nvalues] gradient written in this run */
    float *grad_mem;
    int nregion;
    int *region;       /* node indices, forward order */
    conv_bwd *convs;   /* [nregion], .node < 0 for non-conv */
    float *scratch;    /* largest region value, for accumulate-by-add */
    size_t scratch_n;
    void *dnnl_scratch; /* the caller's oneDNN scratchpad, during cs_bwd_run */
};

/* ---- region ------------------------------------------------------------------ */

cs_status cs_bwd_keep_set(const cs_model *m, const int *layers, int nlayers, int **keep,
                          int *nkeep, cs_error *err) {
    const cs_graph *g = &m->g;
    bool *in_d = calloc((size_t)g->nvalues, sizeof(bool));
    bool *in_region = calloc((size_t)g->nnodes + 1, sizeof(bool));
    bool *k = calloc((size_t)g->nvalues, sizeof(bool));
    int *out = malloc(((size_t)g->nvalues + 1) * sizeof(int));
    cs_status st = CS_OK;
    if (!in_d || !in_region || !k || !out) st = cs_errorf(err, CS_ENOMEM, "out of memory");
    if (st == CS_OK) st = cs_graph_grad_region(&m->g, layers, nlayers, in_d, in_region, err);
    int n = 0;
    if (st == CS_OK) {
        for (int i = 0; i < nlayers; i++) k[layers[i]] = true;
        for (int ni = 0; ni < g->nnodes; ni++) {
            if (!in_region[ni]) continue;
            const cs_node *nd = &g->nodes[ni];
            for (int i = 0; i < nd->ninputs; i++)
                if (nd->inputs[i] >= 0 && !g->values[nd->inputs[i]].data) k[nd->inputs[i]] = true;
            for (int o = 0; o < nd->noutputs; o++)
                if (nd->outputs[o] >= 0) k[nd->outputs[o]] = true;
        }
        for (int v = 0; v < g->nvalues; v++)
            if (k[v]) out[n++] = v;
    }
    free(in_d);
    free(in_region);
    free(k);
    if (st != CS_OK) {
        free(out);
        return st;
    }
    *keep = out;
    *nkeep = n;
    return CS_OK;
}

/* ---- convolution backward-data ---------------------------------------------------- */

static cs_status bwd_weights(cs_model *m, int ni, const dnnl_memory_desc_t *want,
                             const dnnl_memory_desc_t *src_md, const void *src, const void **out,
                             cs_error *err) {
    if (dnnl_memory_desc_equal(want, src_md)) {
        *out = src;
        return CS_OK;
    }
    pthread_mutex_lock(&m->bwd_lock);
    cs_status st = CS_OK;
    cs_packed *pk = &m->bwd_packed[ni];
    if (pk->data && dnnl_memory_desc_equal(&pk->md, want)) {
        *out = pk->data;
        goto done;
    }
    void *dst = cs_arena_alloc(&m->bwd_arena, dnnl_memory_desc_get_size(want));
    if (!dst) {
        st = cs_errorf(err, CS_ENOMEM, "out of memory packing backward weights");
        goto done;
    }
    dnnl_memory_t ms = NULL, md = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_stream_t stream = NULL;
    dnnl_status_t s = dnnl_memory_create(&ms, src_md, m->eng, (void *)src);
    if (s == dnnl_success) s = dnnl_memory_create(&md, want, m->eng, dst);
    if (s == dnnl_success) s = dnnl_reorder_primitive_desc_create(&pd, src_md, m->eng, want, m->eng, NULL);
    if (s == dnnl_success) s = dnnl_primitive_create(&prim, pd);
    if (s == dnnl_success) s = dnnl_stream_create(&stream, m->eng, dnnl_stream_default_flags);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, ms}, {DNNL_ARG_TO, md}};
        s = dnnl_primitive_execute(prim, stream, 2, args);
        dnnl_stream_wait(stream);
    }
    if (stream) dnnl_stream_destroy(stream);
    if (prim) dnnl_primitive_destroy(prim);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (ms) dnnl_memory_destroy(ms);
    if (md) dnnl_memory_destroy(md);
    st = cs_dnnl_check(s, "backward weights reorder", err);
    if (st == CS_OK) {
        /* a session with another batch may want another layout: the
         * first one is memoised, the others are made again (rare) */
        if (!pk->data) {
            pk->md = *want;
            pk->data = dst;
        }
        *out = dst;
    }
done:
    pthread_mutex_unlock(&m->bwd_lock);
    return st;
}

static cs_status reorder_between(cs_bwd *bw, const dnnl_memory_desc_t *a, void *pa,
                                 const dnnl_memory_desc_t *b, void *pb, dnnl_primitive_t *prim,
                                 dnnl_memory_t *scratch, dnnl_memory_t *ma, dnnl_memory_t *mb,
                                 cs_error *err) {
    cs_model *m = bw->m;
    dnnl_primitive_desc_t pd;
    cs_status st = cs_dnnl_check(dnnl_memory_create(ma, a, m->eng, pa), "memory", err);
    if (st == CS_OK) st = cs_dnnl_check(dnnl_memory_create(mb, b, m->eng, pb), "memory", err);
    if (st == CS_OK)
        st = cs_dnnl_check(dnnl_reorder_primitive_desc_create(&pd, a, m->eng, b, m->eng, cs_plan_attr(bw->p)),
                           "reorder", err);
    if (st != CS_OK) return st;
    size_t need = 0;
    st = cs_dnnl_prim_create(pd, m->eng, prim, scratch, &need, "reorder", err);
    dnnl_primitive_desc_destroy(pd);
    cs_plan_need_scratch(bw->p, need);
    return st;
}

static void plain_desc(dnnl_memory_desc_t *md, const cs_shape *s) {
    dnnl_dims_t d;
    for (int i = 0; i < s->ndim; i++) d[i] = s->dims[i];
    dnnl_memory_desc_init_by_strides(md, s->ndim, d, dnnl_f32, NULL);
}

static cs_status build_conv(cs_bwd *b, int ni, conv_bwd *cb, cs_error *err) {
    cs_model *m = b->m;
    cs_plan *p = b->p;
    const cs_node *n = &m->g.nodes[ni];
    const cs_shape *x = cs_plan_shape(p, n->inputs[0]), *w = cs_plan_shape(p, n->inputs[1]);
    const cs_shape *y = cs_plan_shape(p, n->outputs[0]);
    int64_t group = cs_attr_int(n, "group", 1);
    dnnl_dims_t st, dil, pl, pr;
    cs_conv_pads(n, x, w, y, st, dil, pl, pr);
    dnnl_memory_desc_t x_any, w_any, y_any, w_plain, x_plain, y_plain;
    dnnl_dims_t xd = {x->dims[0], x->dims[1], x->dims[2], x->dims[3]};
    dnnl_dims_t yd = {y->dims[0], y->dims[1], y->dims[2], y->dims[3]};
    dnnl_memory_desc_init_by_tag(&x_any, 4, xd, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&y_any, 4, yd, dnnl_f32, dnnl_format_tag_any);
    plain_desc(&x_plain, x);
    plain_desc(&y_plain, y);
    if (group == 1) {
        dnnl_dims_t wd = {w->dims[0], w->dims[1], w->dims[2], w->dims[3]};
        dnnl_memory_desc_init_by_tag(&w_any, 4, wd, dnnl_f32, dnnl_format_tag_any);
        dnnl_memory_desc_init_by_tag(&w_plain, 4, wd, dnnl_f32, dnnl_abcd);
    } else {
        dnnl_dims_t wd = {group, w->dims[0] / group, w->dims[1], w->dims[2], w->dims[3]};
        dnnl_memory_desc_init_by_tag(&w_any, 5, wd, dnnl_f32, dnnl_format_tag_any);
        dnnl_memory_desc_init_by_tag(&w_plain, 5, wd, dnnl_f32, dnnl_abcde);
    }
    dnnl_convolution_desc_t fd, bd;
    dnnl_primitive_desc_t fpd = NULL, bpd = NULL;
    cs_status s = cs_dnnl_check(
        dnnl_dilated_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct,
                                                   &x_any, &w_any, NULL, &y_any, st, dil, pl, pr),
        "convolution desc", err);
    if (s == CS_OK)
        s = cs_dnnl_check(dnnl_primitive_desc_create(&fpd, &fd, NULL, m->eng, NULL), "convolution", err);
    if (s == CS_OK)
        s = cs_dnnl_check(dnnl_dilated_convolution_backward_data_desc_init(
                              &bd, dnnl_convolution_direct, &x_any, &w_any, &y_any, st, dil, pl, pr),
                          "convolution backward desc", err);
    if (s == CS_OK)
        s = cs_dnnl_check(dnnl_primitive_desc_create(&bpd, &bd, cs_plan_attr(p), m->eng, fpd),
                          "convolution backward", err);
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    if (s != CS_OK) return cs_error_prefix(err, "node '%s' (Conv backward)", n->name);

    const dnnl_memory_desc_t *dy_md = dnnl_primitive_desc_query_md(bpd, dnnl_query_diff_dst_md, 0);
    const dnnl_memory_desc_t *w_md = dnnl_primitive_desc_query_md(bpd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *dx_md = dnnl_primitive_desc_query_md(bpd, dnnl_query_diff_src_md, 0);
    const void *wdata = NULL;
    s = bwd_weights(m, ni, w_md, &w_plain, cs_plan_value(p, n->inputs[1]), &wdata, err);
    float *dy_plain = b->grad[n->outputs[0]];
    if (s == CS_OK && !dnnl_memory_desc_equal(dy_md, &y_plain)) {
        cb->dy_blk = aligned_alloc(64, (dnnl_memory_desc_get_size(dy_md) + 63) & ~(size_t)63);
        if (!cb->dy_blk) s = cs_errorf(err, CS_ENOMEM, "out of memory");
        else s = reorder_between(b, &y_plain, dy_plain, dy_md, cb->dy_blk, &cb->r_in, &cb->sc_in, &cb->m_dy_plain, &cb->m_dy, err);
    } else if (s == CS_OK) {
        s = cs_dnnl_check(dnnl_memory_create(&cb->m_dy, dy_md, m->eng, dy_plain), "memory", err);
    }
    /* dx lands in a scratch of its own: it is then added into the input's
     * gradient, which other consumers of the input also feed. */
    if (s == CS_OK) {
        cb->dx_plain = aligned_alloc(64, ((size_t)cs_shape_numel(x) * 4 + 63) & ~(size_t)63);
        if (!cb->dx_plain) s = cs_errorf(err, CS_ENOMEM, "out of memory");
    }
    if (s == CS_OK && !dnnl_memory_desc_equal(dx_md, &x_plain)) {
        cb->dx_blk = aligned_alloc(64, (dnnl_memory_desc_get_size(dx_md) + 63) & ~(size_t)63);
        if (!cb->dx_blk) s = cs_errorf(err, CS_ENOMEM, "out of memory");
        else s = reorder_between(b, dx_md, cb->dx_blk, &x_plain, cb->dx_plain, &cb->r_out, &cb->sc_out, &cb->m_dx, &cb->m_dx_plain, err);
    } else if (s == CS_OK) {
        s = cs_dnnl_check(dnnl_memory_create(&cb->m_dx, dx_md, m->eng, cb->dx_plain), "memory", err);
    }
    if (s == CS_OK) s = cs_dnnl_check(dnnl_memory_create(&cb->m_w, w_md, m->eng, (void *)wdata), "memory", err);
    size_t need = 0;
    if (s == CS_OK) s = cs_dnnl_prim_create(bpd, m->eng, &cb->prim, &cb->sc_prim, &need, "convolution backward", err);
    cs_plan_need_scratch(p, need);
    dnnl_primitive_desc_destroy(bpd);
    cb->node = ni;
    return s;
}

static void free_conv(conv_bwd *cb) {
    if (cb->prim) dnnl_primitive_destroy(cb->prim);
    if (cb->r_in) dnnl_primitive_destroy(cb->r_in);
    if (cb->r_out) dnnl_primitive_destroy(cb->r_out);
    dnnl_memory_t ms[] = {cb->m_dy_plain, cb->m_dy, cb->m_w, cb->m_dx, cb->m_dx_plain,
                          cb->sc_prim, cb->sc_in, cb->sc_out};
    for (int i = 0; i < 8; i++)
        if (ms[i]) dnnl_memory_destroy(ms[i]);
    free(cb->dy_blk);
    free(cb->dx_blk);
    free(cb->dx_plain);
}

/* ---- build / free -------------------------------------------------------------- */

cs_status cs_bwd_build(cs_model *m, cs_plan *p, const int *layers, int nlayers, cs_bwd **out,
                       cs_error *err) {
    const cs_graph *g = &m->g;
    *out = NULL;
    cs_bwd *b = calloc(1, sizeof *b);
    if (!b) return cs_errorf(err, CS_ENOMEM, "out of memory");
    b->m = m;
    b->p = p;
    b->nvalues = g->nvalues;
    b->in_d = calloc((size_t)g->nvalues, sizeof(bool));
    b->grad = calloc((size_t)g->nvalues, sizeof(float *));
    b->touched = calloc((size_t)g->nvalues, sizeof(bool));
    bool *in_region = calloc((size_t)g->nnodes + 1, sizeof(bool));
    b->region = malloc(((size_t)g->nnodes + 1) * sizeof(int));
    b->convs = calloc((size_t)g->nnodes + 1, sizeof(conv_bwd));
    cs_status st = CS_OK;
    if (!b->in_d || !b->grad || !b->touched || !in_region || !b->region || !b->convs)
        st = cs_errorf(err, CS_ENOMEM, "out of memory");
    if (st == CS_OK) st = cs_graph_grad_region(&m->g, layers, nlayers, b->in_d, in_region, err);
    size_t total = 0;
    if (st == CS_OK) {
        for (int v = 0; v < g->nvalues; v++) {
            if (!b->in_d[v]) continue;
            const cs_shape *s = cs_plan_shape(p, v);
            if (!s || s->dtype != CS_DT_FLOAT) {
                b->in_d[v] = false; /* integer side outputs carry no gradient */
                continue;
            }
            size_t n = (size_t)cs_shape_numel(s);
            total += (n + 15) & ~(size_t)15;
            if (n > b->scratch_n) b->scratch_n = n;
        }
        b->grad_mem = aligned_alloc(64, total * sizeof(float) + 64);
        b->scratch = aligned_alloc(64, ((b->scratch_n * sizeof(float) + 63) & ~(size_t)63) + 64);
        if (!b->grad_mem || !b->scratch) st = cs_errorf(err, CS_ENOMEM, "out of memory for gradients");
    }
    if (st == CS_OK) {
        float *q = b->grad_mem;
        for (int v = 0; v < g->nvalues; v++) {
            if (!b->in_d[v]) continue;
            b->grad[v] = q;
            q += ((size_t)cs_shape_numel(cs_plan_shape(p, v)) + 15) & ~(size_t)15;
        }
        for (int ni = 0; ni < g->nnodes; ni++) {
            b->convs[b->nregion].node = -1;
            if (!in_region[ni]) continue;
            const cs_node *n = &g->nodes[ni];
            if (n->op == CS_OP_CONV && b->in_d[n->inputs[0]] && cs_plan_shape(p, n->inputs[0])->ndim == 4) {
                st = build_conv(b, ni, &b->convs[b->nregion], err);
                if (st != CS_OK) break;
            }
            b->region[b->nregion++] = ni;
        }
    }
    free(in_region);
    if (st != CS_OK) {
        cs_bwd_free(b);
        return st;
    }
    *out = b;
    return CS_OK;
}

void cs_bwd_free(cs_bwd *b) {
    if (!b) return;
    if (b->convs)
        for (int i = 0; i < b->nregion; i++)
            if (b->convs[i].node >= 0) free_conv(&b->convs[i]);
    free(b->convs);
    free(b->in_d);
    free(b->grad);
    free(b->touched);
    free(b->region);
    free(b->grad_mem);
    free(b->scratch);
    free(b);
}

const float *cs_bwd_grad(const cs_bwd *b, int v) {
    return (v >= 0 && v < b->nvalues && b->in_d[v]) ? b->grad[v] : NULL;
}

/* ---- kernels ------------------------------------------------------------------- */

typedef struct bctx {
    cs_bwd *b;
    const cs_node *n;
    cs_error *err;
} bctx;

static const float *fwd(bctx *c, int v) { return cs_plan_value(c->b->p, v); }
static const cs_shape *shp(bctx *c, int v) { return cs_plan_shape(c->b->p, v); }

/* Where a gradient for input value v goes: straight into its buffer when
 * this is the first contribution, else into scratch to be added. */
static float *gtarget(bctx *c, int v) {
    return c->b->touched[v] ? c->b->scratch : c->b->grad[v];
}

static void gcommit(bctx *c, int v) {
    cs_bwd *b = c->b;
    if (!b->touched[v]) {
        b->touched[v] = true;
        return;
    }
    int64_t n = cs_shape_numel(shp(c, v));
    float *g = b->grad[v];
    for (int64_t i = 0; i < n; i++) g[i] += b->scratch[i];
}

static bool wants(bctx *c, int v) { return v >= 0 && c->b->in_d[v]; }

/* Sums gy (shape y) over the dims where `a` broadcasts, times an optional
 * factor f (shape fs, broadcast to y), into ga (shape a).  ga is written
 * (not accumulated). */
static void reduce_bcast(const float *gy, const cs_shape *y, const cs_shape *a, float *ga,
                         const float *f, const cs_shape *fs, int fmode, const float *f2,
                         const cs_shape *f2s) {
    int nd = y->ndim;
    int64_t sa[CS_MAX_DIMS], sf[CS_MAX_DIMS], sf2[CS_MAX_DIMS], idx[CS_MAX_DIMS] = {0};
    int64_t acc = 1, accf = 1, accf2 = 1;
    for (int i = nd - 1; i >= 0; i--) {
        int ja = i - (nd - a->ndim);
        int64_t da = ja >= 0 ? a->dims[ja] : 1;
        sa[i] = da == 1 ? 0 : acc;
        acc *= da;
        if (f) {
            int jf = i - (nd - fs->ndim);
            int64_t df = jf >= 0 ? fs->dims[jf] : 1;
            sf[i] = df == 1 ? 0 : accf;
            accf *= df;
        }
        if (f2) {
            int jf = i - (nd - f2s->ndim);
            int64_t df = jf >= 0 ? f2s->dims[jf] : 1;
            sf2[i] = df == 1 ? 0 : accf2;
            accf2 *= df;
        }
    }
    memset(ga, 0, (size_t)acc * sizeof(float));
    int64_t total = cs_shape_numel(y), oa = 0, of = 0, of2 = 0;
    for (int64_t i = 0; i < total; i++) {
        float g = gy[i];
        if (fmode == 1) g *= f[of];                       /* d(a*b)/da = b */
        else if (fmode == 2) g /= f[of];                  /* d(a/b)/da = 1/b */
        else if (fmode == 3) g *= -f2[of2] / (f[of] * f[of]); /* d(a/b)/db = -a/b² */
        ga[oa] += g;
        for (int d = nd - 1; d >= 0; d--) {
            oa += sa[d];
            if (f) of += sf[d];
            if (f2) of2 += sf2[d];
            if (++idx[d] < y->dims[d]) break;
            oa -= sa[d] * y->dims[d];
            if (f) of -= sf[d] * y->dims[d];
            if (f2) of2 -= sf2[d] * y->dims[d];
            idx[d] = 0;
        }
    }
}

static cs_status bwd_binary(bctx *c) {
    const cs_node *n = c->n;
    int a = n->inputs[0], bv = n->inputs[1], y = n->outputs[0];
    const float *gy = c->b->grad[y];
    const cs_shape *ys = shp(c, y), *as = shp(c, a), *bs = shp(c, bv);
    if (wants(c, a)) {
        int mode = n->op == CS_OP_MUL ? 1 : n->op == CS_OP_DIV ? 2 : 0;
        reduce_bcast(gy, ys, as, gtarget(c, a), mode ? fwd(c, bv) : NULL, bs, mode, NULL, NULL);
        gcommit(c, a);
    }
    if (wants(c, bv)) {
        float *t = gtarget(c, bv);
        if (n->op == CS_OP_MUL) reduce_bcast(gy, ys, bs, t, fwd(c, a), as, 1, NULL, NULL);
        else if (n->op == CS_OP_DIV) reduce_bcast(gy, ys, bs, t, fwd(c, bv), bs, 3, fwd(c, a), as);
        else {
            reduce_bcast(gy, ys, bs, t, NULL, NULL, 0, NULL, NULL);
            if (n->op == CS_OP_SUB) {
                int64_t k = cs_shape_numel(bs);
                for (int64_t i = 0; i < k; i++) t[i] = -t[i];
            }
        }
        gcommit(c, bv);
    }
    return CS_OK;
}

static float act_grad(cs_op op, const cs_node *n, float x, float y) {
    switch (op) {
    case CS_OP_RELU: return y > 0.f ? 1.f : 0.f;
    case CS_OP_LEAKYRELU: return x > 0.f ? 1.f : cs_attr_float(n, "alpha", 0.01f);
    case CS_OP_SIGMOID: return y * (1.f - y);
    case CS_OP_TANH: return 1.f - y * y;
    case CS_OP_HARDSIGMOID: {
        float al = cs_attr_float(n, "alpha", 0.2f), be = cs_attr_float(n, "beta", 0.5f);
        float t = al * x + be;
        return (t > 0.f && t < 1.f) ? al : 0.f;
    }
    case CS_OP_HARDSWISH: /* PyTorch: 0 below -3, (2x+3)/6 up to 3, 1 above */
        return x < -3.f ? 0.f : x <= 3.f ? (2.f * x + 3.f) / 6.f : 1.f;
    case CS_OP_ERF: return 1.1283791670955126f * expf(-x * x);
    case CS_OP_GELU: {
        float cdf = 0.5f * (1.f + erff(x * 0.70710678118654752f));
        float pdf = 0.3989422804014327f * expf(-0.5f * x * x);
        return cdf + x * pdf;
    }
    case CS_OP_SQRT: return 0.5f / y;
    case CS_OP_EXP: return y;
    case CS_OP_NEG: return -1.f;
    case CS_OP_RECIPROCAL: return -y * y;
    default: return 1.f; /* Identity, Dropout (eval) */
    }
}

static cs_status bwd_unary(bctx *c) {
    const cs_node *n = c->n;
    int x = n->inputs[0], y = n->outputs[0];
    if (!wants(c, x)) return CS_OK;
    const float *gy = c->b->grad[y], *xv = fwd(c, x), *yv = fwd(c, y);
    float *gx = gtarget(c, x);
    int64_t k = cs_shape_numel(shp(c, x));
    if (n->op == CS_OP_CLIP) {
        float lo = cs_attr_float(n, "min", -INFINITY), hi = cs_attr_float(n, "max", INFINITY);
        if (n->ninputs > 1 && n->inputs[1] >= 0) lo = *(const float *)fwd(c, n->inputs[1]);
        if (n->ninputs > 2 && n->inputs[2] >= 0) hi = *(const float *)fwd(c, n->inputs[2]);
        for (int64_t i = 0; i < k; i++) gx[i] = (xv[i] > lo && xv[i] < hi) ? gy[i] : 0.f;
    } else if (n->op == CS_OP_IDENTITY || n->op == CS_OP_DROPOUT) {
        memcpy(gx, gy, (size_t)k * sizeof(float));
    } else {
        if (!xv || !yv) return cs_errorf(c->err, CS_EINTERNAL, "node '%s': forward values missing", n->name);
        for (int64_t i = 0; i < k; i++) gx[i] = gy[i] * act_grad(n->op, n, xv[i], yv[i]);
    }
    gcommit(c, x);
    return CS_OK;
}

static cs_status bwd_pow(bctx *c) {
    const cs_node *n = c->n;
    int x = n->inputs[0], y = n->outputs[0];
    if (wants(c, n->inputs[1]))
        return cs_errorf(c->err, CS_EUNSUPPORTED, "node '%s': gradient of Pow's exponent", n->name);
    if (!wants(c, x)) return CS_OK;
    if (cs_shape_numel(shp(c, n->inputs[1])) != 1)
        return cs_errorf(c->err, CS_EUNSUPPORTED, "node '%s': Pow with a tensor exponent", n->name);
    float e = *(const float *)fwd(c, n->inputs[1]);
    const float *gy = c->b->grad[y], *xv = fwd(c, x);
    float *gx = gtarget(c, x);
    int64_t k = cs_shape_numel(shp(c, x));
    for (int64_t i = 0; i < k; i++) gx[i] = gy[i] * e * powf(xv[i], e - 1.f);
    gcommit(c, x);
    return CS_OK;
}

/* Reshape-like ops: same data, new shape. */
static cs_status bwd_copy(bctx *c) {
    int x = c->n->inputs[0];
    if (!wants(c, x)) return CS_OK;
    memcpy(gtarget(c, x), c->b->grad[c->n->outputs[0]], (size_t)cs_shape_numel(shp(c, x)) * sizeof(float));
    gcommit(c, x);
    return CS_OK;
}

static cs_status bwd_gemm(bctx *c) {
    const cs_node *n = c->n;
    int a = n->inputs[0], bw = n->inputs[1];
    if (wants(c, bw) || (n->ninputs > 2 && wants(c, n->inputs[2])))
        return cs_errorf(c->err, CS_EUNSUPPORTED, "node '%s': Gemm with a computed weight", n->name);
    if (!wants(c, a)) return CS_OK;
    if (cs_attr_int(n, "transA", 0))
        return cs_errorf(c->err, CS_EUNSUPPORTED, "node '%s': Gemm with transA", n->name);
    const cs_shape *ys = shp(c, n->outputs[0]), *as = shp(c, a);
    int64_t M = ys->dims[0], N = ys->dims[1], K = as->dims[1];
    float alpha = cs_attr_float(n, "alpha", 1.f);
    bool tb = cs_attr_int(n, "transB", 0) != 0;
    /* dA[M,K] = alpha · dY[M,N] · op(B)ᵀ; B is N×K when transposed, else K×N */
    dnnl_status_t s = dnnl_sgemm('N', tb ? 'N' : 'T', M, K, N, alpha, c->b->grad[n->outputs[0]], N,
                                 fwd(c, bw), tb ? K : N, 0.f, gtarget(c, a), K);
    if (s != dnnl_success) return cs_dnnl_check(s, "gemm backward", c->err);
    gcommit(c, a);
    return CS_OK;
}

static cs_status bwd_matmul(bctx *c) {
    const cs_node *n = c->n;
    int a = n->inputs[0], bv = n->inputs[1], y = n->outputs[0];
    const cs_shape *as = shp(c, a), *bs = shp(c, bv), *ys = shp(c, y);
    if (as->ndim < 2 || bs->ndim != 2)
        return cs_errorf(c->err, CS_EUNSUPPORTED, "node '%s': MatMul backward needs a 2-D right operand", n->name);
    int64_t K = as->dims[as->ndim - 1], N = bs->dims[1];
    int64_t M = cs_shape_numel(as) / K; /* batch dims folded into rows */
    const float *gy = c->b->grad[y];
    (void)ys;
    if (wants(c, a)) {
        dnnl_status_t s = dnnl_sgemm('N', 'T', M, K, N, 1.f, gy, N, fwd(c, bv), N, 0.f, gtarget(c, a), K);
        if (s != dnnl_success) return cs_dnnl_check(s, "matmul backward", c->err);
        gcommit(c, a);
    }
    if (wants(c, bv)) {
        dnnl_status_t s = dnnl_sgemm('T', 'N', K, N, M, 1.f, fwd(c, a), K, gy, N, 0.f, gtarget(c, bv), N);
        if (s != dnnl_success) return cs_dnnl_check(s, "matmul backward", c->err);
        gcommit(c, bv);
    }
    return CS_OK;
}

static cs_status bwd_global_pool(bctx *c) {
    const cs_node *n = c->n;
    int x = n->inputs[0];
    if (!wants(c, x)) return CS_OK;
    const cs_shape *xs = shp(c, x);
    int64_t nc = xs->dims[0] * xs->dims[1], hw = xs->dims[2] * xs->dims[3];
    const float *gy = c->b->grad[n->outputs[0]], *xv = fwd(c, x);
    float *gx = gtarget(c, x);
    if (n->op == CS_OP_GLOBALMAXPOOL) {
        for (int64_t i = 0; i < nc; i++) {
            int64_t best = 0;
            for (int64_t j = 1; j < hw; j++)
                if (xv[i * hw + j] > xv[i * hw + best]) best = j;
            for (int64_t j = 0; j < hw; j++) gx[i * hw + j] = j == best ? gy[i] : 0.f;
        }
    } else {
        float inv = 1.f / (float)hw;
        for (int64_t i = 0; i < nc; i++)
            for (int64_t j = 0; j < hw; j++) gx[i * hw + j] = gy[i] * inv;
    }
    gcommit(c, x);
    return CS_OK;
}

static cs_status bwd_pool(bctx *c) {
    const cs_node *n = c->n;
    int x = n->inputs[0], y = n->outputs[0];
    if (!wants(c, x)) return CS_OK;
    const cs_shape *xs = shp(c, x), *ys = shp(c, y);
    const int64_t *k, *s, *pads, *d;
    cs_attr_ints(n, "kernel_shape", &k);
    int ns = cs_attr_ints(n, "strides", &s), np = cs_attr_ints(n, "pads", &pads);
    int nd = cs_attr_ints(n, "dilations", &d);
    int64_t kh = k[0], kw = k[1], sh = ns == 2 ? s[0] : 1, sw = ns == 2 ? s[1] : 1;
    int64_t ph = np == 4 ? pads[0] : 0, pw = np == 4 ? pads[1] : 0;
    int64_t dh = nd == 2 ? d[0] : 1, dw = nd == 2 ? d[1] : 1;
    int64_t H = xs->dims[2], W = xs->dims[3], OH = ys->dims[2], OW = ys->dims[3];
    int64_t nc = xs->dims[0] * xs->dims[1];
    bool incl = cs_attr_int(n, "count_include_pad", 0) != 0;
    const float *gy = c->b->grad[y], *xv = fwd(c, x);
    float *gx = gtarget(c, x);
    memset(gx, 0, (size_t)(nc * H * W) * sizeof(float));
    for (int64_t q = 0; q < nc; q++) {
        const float *xp = xv + q * H * W;
        float *gp = gx + q * H * W;
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                float g = gy[(q * OH + oh) * OW + ow];
                int64_t h0 = oh * sh - ph, w0 = ow * sw - pw;
                if (n->op == CS_OP_MAXPOOL) {
                    int64_t best = -1;
                    for (int64_t i = 0; i < kh; i++)
                        for (int64_t j = 0; j < kw; j++) {
                            int64_t h = h0 + i * dh, w = w0 + j * dw;
                            if (h < 0 || h >= H || w < 0 || w >= W) continue;
                            if (best < 0 || xp[h * W + w] > xp[best]) best = h * W + w;
                        }
                    if (best >= 0) gp[best] += g;
                } else {
                    /* divisor as PyTorch: the window clipped to the padded
                     * input when counting padding, else to the input */
                    int64_t hs = h0 < 0 ? 0 : h0, ws = w0 < 0 ? 0 : w0;
                    int64_t he = h0 + kh > H ? H : h0 + kh, we = w0 + kw > W ? W : w0 + kw;
                    int64_t cnt = incl ? ((h0 + kh > H + ph ? H + ph : h0 + kh) - h0) *
                                             ((w0 + kw > W + pw ? W + pw : w0 + kw) - w0)
                                       : (he - hs) * (we - ws);
                    if (cnt <= 0) continue;
                    float v = g / (float)cnt;
                    for (int64_t h = hs; h < he; h++)
                        for (int64_t w = ws; w < we; w++) gp[h * W + w] += v;
                }
            }
    }
    gcommit(c, x);
    return CS_OK;
}

static cs_status bwd_reducemean(bctx *c) {
    const cs_node *n = c->n;
    int x = n->inputs[0];
    if (!wants(c, x)) return CS_OK;
    const cs_shape *xs = shp(c, x);
    const int64_t *ax;
    int na = cs_attr_ints(n, "axes", &ax);
    bool red[CS_MAX_DIMS] = {0};
    int64_t cnt = 1;
    if (na == 0) {
        if (n->ninputs > 1 && n->inputs[1] >= 0) {
            const int64_t *axv = cs_plan_value(c->b->p, n->inputs[1]);
            int64_t k = cs_shape_numel(shp(c, n->inputs[1]));
            for (int64_t i = 0; i < k; i++) red[axv[i] < 0 ? axv[i] + xs->ndim : axv[i]] = true;
        } else {
            for (int i = 0; i < xs->ndim; i++) red[i] = true;
        }
    }
    for (int i = 0; i < na; i++) red[ax[i] < 0 ? ax[i] + xs->ndim : ax[i]] = true;
    cs_shape ks = *xs; /* the output shape with kept dims */
    for (int i = 0; i < xs->ndim; i++)
        if (red[i]) {
            cnt *= xs->dims[i];
            ks.dims[i] = 1;
        }
    /* broadcast gy (shape ks) back over x, divided by the count */
    const float *gy = c->b->grad[n->outputs[0]];
    float *gx = gtarget(c, x);
    int nd = xs->ndim;
    int64_t sk[CS_MAX_DIMS], idx[CS_MAX_DIMS] = {0}, acc = 1, o = 0;
    for (int i = nd - 1; i >= 0; i--) {
        sk[i] = ks.dims[i] == 1 ? 0 : acc;
        acc *= ks.dims[i];
    }
    float inv = 1.f / (float)cnt;
    int64_t total = cs_shape_numel(xs);
    for (int64_t i = 0; i < total; i++) {
        gx[i] = gy[o] * (n->op == CS_OP_REDUCEMEAN ? inv : 1.f);
        for (int d = nd - 1; d >= 0; d--) {
            o += sk[d];
            if (++idx[d] < xs->dims[d]) break;
            o -= sk[d] * xs->dims[d];
            idx[d] = 0;
        }
    }
    gcommit(c, x);
    return CS_OK;
}

static cs_status bwd_concat(bctx *c) {
    const cs_node *n = c->n;
    const cs_shape *ys = shp(c, n->outputs[0]);
    int64_t axis = cs_attr_int(n, "axis", 0);
    if (axis < 0) axis += ys->ndim;
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < axis; i++) outer *= ys->dims[i];
    for (int i = (int)axis + 1; i < ys->ndim; i++) inner *= ys->dims[i];
    const float *gy = c->b->grad[n->outputs[0]];
    int64_t off = 0, row = ys->dims[axis] * inner;
    for (int k = 0; k < n->ninputs; k++) {
        int x = n->inputs[k];
        int64_t len = shp(c, x)->dims[axis] * inner;
        if (wants(c, x)) {
            float *gx = gtarget(c, x);
            for (int64_t o = 0; o < outer; o++)
                memcpy(gx + o * len, gy + o * row + off, (size_t)len * sizeof(float));
            gcommit(c, x);
        }
        off += len;
    }
    return CS_OK;
}

static cs_status bwd_split(bctx *c) {
    const cs_node *n = c->n;
    int x = n->inputs[0];
    if (!wants(c, x)) return CS_OK;
    const cs_shape *xs = shp(c, x);
    int64_t axis = cs_attr_int(n, "axis", 0);
    if (axis < 0) axis += xs->ndim;
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < axis; i++) outer *= xs->dims[i];
    for (int i = (int)axis + 1; i < xs->ndim; i++) inner *= xs->dims[i];
    int64_t row = xs->dims[axis] * inner, off = 0;
    float *gx = gtarget(c, x);
    for (int k = 0; k < n->noutputs; k++) {
        int y = n->outputs[k];
        int64_t len = shp(c, y)->dims[axis] * inner;
        const float *gy = wants(c, y) && c->b->touched[y] ? c->b->grad[y] : NULL;
        for (int64_t o = 0; o < outer; o++) {
            if (gy) memcpy(gx + o * row + off, gy + o * len, (size_t)len * sizeof(float));
            else memset(gx + o * row + off, 0, (size_t)len * sizeof(float));
        }
        off += len;
    }
    gcommit(c, x);
    return CS_OK;
}

/* Slice: y[i] = x[start + i*step] per dim, so dx is zero except at the
 * sliced positions, where it is dy.  ShuffleNet V2's channel split
 * (x.chunk(2, dim=1)) exports as two Slices. */
static cs_status bwd_slice(bctx *c) {
    const cs_node *n = c->n;
    int x = n->inputs[0], y = n->outputs[0];
    if (!wants(c, x)) return CS_OK;
    const cs_shape *xs = shp(c, x), *ys = shp(c, y);
    int nd = xs->ndim;
    /* the forward's own window: starts/axes/steps are constants of the plan */
    const cs_shape *in[5] = {0};
    const void *in_d[5] = {0};
    for (int i = 0; i < n->ninputs && i < 5; i++)
        if (n->inputs[i] >= 0) {
            in[i] = shp(c, n->inputs[i]);
            in_d[i] = i ? cs_plan_value(c->b->p, n->inputs[i]) : NULL;
        }
    int64_t start[CS_MAX_DIMS], step[CS_MAX_DIMS];
    cs_status st = cs_op_slice_window(&c->b->m->g, n, in, in_d, start, step, c->err);
    if (st != CS_OK) return st;
    /* walk y in C order; the matching x offset moves by step*xstride */
    int64_t xst[CS_MAX_DIMS], acc = 1, base = 0, idx[CS_MAX_DIMS] = {0};
    for (int d = nd - 1; d >= 0; d--) {
        if (ys->dims[d] > 0 && (start[d] + (ys->dims[d] - 1) * step[d] < 0 ||
                                start[d] + (ys->dims[d] - 1) * step[d] >= xs->dims[d]))
            return cs_errorf(c->err, CS_EINTERNAL, "node '%s': Slice gradient out of bounds", n->name);
        xst[d] = acc;
        acc *= xs->dims[d];
        base += start[d] * xst[d];
    }
    float *gx = gtarget(c, x);
    memset(gx, 0, (size_t)cs_shape_numel(xs) * sizeof(float));
    const float *gy = c->b->grad[y];
    int64_t total = cs_shape_numel(ys), o = base;
    for (int64_t i = 0; i < total; i++) {
        gx[o] = gy[i];
        for (int d = nd - 1; d >= 0; d--) {
            o += step[d] * xst[d];
            if (++idx[d] < ys->dims[d]) break;
            o -= step[d] * xst[d] * ys->dims[d];
            idx[d] = 0;
        }
    }
    gcommit(c, x);
    return CS_OK;
}

static cs_status bwd_transpose(bctx *c) {
    const cs_node *n = c->n;
    int x = n->inputs[0], y = n->outputs[0];
    if (!wants(c, x)) return CS_OK;
    const cs_shape *xs = shp(c, x), *ys = shp(c, y);
    int nd = xs->ndim;
    const int64_t *perm;
    int np = cs_attr_ints(n, "perm", &perm);
    int64_t pm[CS_MAX_DIMS];
    for (int i = 0; i < nd; i++) pm[i] = np == nd ? perm[i] : nd - 1 - i;
    /* y[i0..] = x[j] with x index j[pm[d]] = i[d]; walk y in order and
     * scatter to x (stride of x along y's dim d is xstride[pm[d]]) */
    int64_t xst[CS_MAX_DIMS], acc = 1;
    for (int i = nd - 1; i >= 0; i--) {
        xst[i] = acc;
        acc *= xs->dims[i];
    }
    int64_t st[CS_MAX_DIMS], idx[CS_MAX_DIMS] = {0}, o = 0;
    for (int d = 0; d < nd; d++) st[d] = xst[pm[d]];
    const float *gy = c->b->grad[y];
    float *gx = gtarget(c, x);
    int64_t total = cs_shape_numel(ys);
    for (int64_t i = 0; i < total; i++) {
        gx[o] = gy[i];
        for (int d = nd - 1; d >= 0; d--) {
            o += st[d];
            if (++idx[d] < ys->dims[d]) break;
            o -= st[d] * ys->dims[d];
            idx[d] = 0;
        }
    }
    gcommit(c, x);
    return CS_OK;
}

/* Constant-mode Pad: the gradient is the interior of dY. */
static cs_status bwd_pad(bctx *c) {
    const cs_node *n = c->n;
    int x = n->inputs[0], y = n->outputs[0];
    if (!wants(c, x)) return CS_OK;
    const char *mode = cs_attr_string(n, "mode", "constant");
    if (strcmp(mode, "constant") != 0)
        return cs_errorf(c->err, CS_EUNSUPPORTED, "node '%s': gradient of Pad mode %s", n->name, mode);
    const cs_shape *xs = shp(c, x), *ys = shp(c, y);
    int nd = xs->ndim;
    int64_t begin[CS_MAX_DIMS] = {0};
    const int64_t *pads = NULL;
    int np = cs_attr_ints(n, "pads", &pads);
    if (np == 0 && n->ninputs > 1 && n->inputs[1] >= 0) {
        pads = cs_plan_value(c->b->p, n->inputs[1]);
        np = (int)cs_shape_numel(shp(c, n->inputs[1]));
    }
    if (!pads || np != 2 * nd)
        return cs_errorf(c->err, CS_EUNSUPPORTED, "node '%s': Pad without constant pads", n->name);
    for (int i = 0; i < nd; i++) begin[i] = pads[i];
    int64_t yst[CS_MAX_DIMS], acc = 1, idx[CS_MAX_DIMS] = {0}, o = 0;
    for (int i = nd - 1; i >= 0; i--) {
        yst[i] = acc;
        acc *= ys->dims[i];
    }
    for (int i = 0; i < nd; i++) o += begin[i] * yst[i];
    const float *gy = c->b->grad[y];
    float *gx = gtarget(c, x);
    int64_t total = cs_shape_numel(xs);
    for (int64_t i = 0; i < total; i++) {
        gx[i] = gy[o];
        for (int d = nd - 1; d >= 0; d--) {
            o += yst[d];
            if (++idx[d] < xs->dims[d]) break;
            o -= yst[d] * xs->dims[d];
            idx[d] = 0;
        }
    }
    gcommit(c, x);
    return CS_OK;
}

static cs_status bwd_batchnorm(bctx *c) {
    const cs_node *n = c->n;
    int x = n->inputs[0];
    if (!wants(c, x)) return CS_OK;
    const cs_shape *xs = shp(c, x);
    const float *gamma = fwd(c, n->inputs[1]), *var = fwd(c, n->inputs[4]);
    float eps = cs_attr_float(n, "epsilon", 1e-5f);
    int64_t C = xs->dims[1], inner = cs_shape_numel(xs) / (xs->dims[0] * C);
    const float *gy = c->b->grad[n->outputs[0]];
    float *gx = gtarget(c, x);
    for (int64_t b = 0; b < xs->dims[0]; b++)
        for (int64_t ch = 0; ch < C; ch++) {
            float s = gamma[ch] / sqrtf(var[ch] + eps);
            const float *g = gy + (b * C + ch) * inner;
            float *o = gx + (b * C + ch) * inner;
            for (int64_t i = 0; i < inner; i++) o[i] = g[i] * s;
        }
    gcommit(c, x);
    return CS_OK;
}

static cs_status bwd_softmax(bctx *c) {
    const cs_node *n = c->n;
    int x = n->inputs[0], y = n->outputs[0];
    if (!wants(c, x)) return CS_OK;
    const cs_shape *xs = shp(c, x);
    int64_t axis = cs_attr_int(n, "axis", c->b->m->g.opset >= 13 ? -1 : 1);
    if (axis < 0) axis += xs->ndim;
    int64_t outer = 1, len = 1, inner = 1;
    /* opset < 13 coerces to 2-D at axis; 13+ normalises along one axis */
    if (c->b->m->g.opset < 13) {
        for (int i = 0; i < axis; i++) outer *= xs->dims[i];
        for (int i = (int)axis; i < xs->ndim; i++) len *= xs->dims[i];
    } else {
        for (int i = 0; i < axis; i++) outer *= xs->dims[i];
        len = xs->dims[axis];
        for (int i = (int)axis + 1; i < xs->ndim; i++) inner *= xs->dims[i];
    }
    const float *gy = c->b->grad[y], *yv = fwd(c, y);
    float *gx = gtarget(c, x);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t in = 0; in < inner; in++) {
            int64_t base = o * len * inner + in;
            double dot = 0;
            for (int64_t i = 0; i < len; i++) dot += (double)gy[base + i * inner] * yv[base + i * inner];
            for (int64_t i = 0; i < len; i++)
                gx[base + i * inner] = yv[base + i * inner] * (gy[base + i * inner] - (float)dot);
        }
    gcommit(c, x);
    return CS_OK;
}

static cs_status bwd_layernorm(bctx *c) {
    const cs_node *n = c->n;
    int x = n->inputs[0];
    if (n->ninputs > 1 && wants(c, n->inputs[1]))
        return cs_errorf(c->err, CS_EUNSUPPORTED, "node '%s': computed LayerNorm scale", n->name);
    if (!wants(c, x)) return CS_OK;
    const cs_shape *xs = shp(c, x);
    int64_t axis = cs_attr_int(n, "axis", -1);
    if (axis < 0) axis += xs->ndim;
    float eps = cs_attr_float(n, "epsilon", 1e-5f);
    int64_t rows = 1, len = 1;
    for (int i = 0; i < axis; i++) rows *= xs->dims[i];
    for (int i = (int)axis; i < xs->ndim; i++) len *= xs->dims[i];
    const float *xv = fwd(c, x), *gy = c->b->grad[n->outputs[0]];
    const float *gamma = n->ninputs > 1 && n->inputs[1] >= 0 ? fwd(c, n->inputs[1]) : NULL;
    float *gx = gtarget(c, x);
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = xv + r * len, *gr = gy + r * len;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < len; i++) mean += xr[i];
        mean /= (double)len;
        for (int64_t i = 0; i < len; i++) var += (xr[i] - mean) * (xr[i] - mean);
        var /= (double)len;
        double rstd = 1.0 / sqrt(var + eps);
        /* dx = rstd · (g − mean(g) − x̂·mean(g·x̂)), g = dy·γ */
        double mg = 0, mgx = 0;
        for (int64_t i = 0; i < len; i++) {
            double g = gr[i] * (gamma ? gamma[i] : 1.f), xh = (xr[i] - mean) * rstd;
            mg += g;
            mgx += g * xh;
        }
        mg /= (double)len;
        mgx /= (double)len;
        for (int64_t i = 0; i < len; i++) {
            double g = gr[i] * (gamma ? gamma[i] : 1.f), xh = (xr[i] - mean) * rstd;
            gx[r * len + i] = (float)(rstd * (g - mg - xh * mgx));
        }
    }
    gcommit(c, x);
    return CS_OK;
}

static cs_status bwd_conv(bctx *c, conv_bwd *cb, dnnl_stream_t stream) {
    const cs_node *n = c->n;
    if (wants(c, n->inputs[1]) || (n->ninputs > 2 && wants(c, n->inputs[2])))
        return cs_errorf(c->err, CS_EUNSUPPORTED, "node '%s': Conv with computed weights", n->name);
    int x = n->inputs[0];
    if (!wants(c, x)) return CS_OK;
    if (cb->node < 0)
        return cs_errorf(c->err, CS_EUNSUPPORTED, "node '%s': Conv backward needs a 4-D input", n->name);
    void *scratch = c->b->dnnl_scratch;
    dnnl_exec_arg_t a2[3]; /* + the scratchpad */
    if (cb->r_in) {
        a2[0] = (dnnl_exec_arg_t){DNNL_ARG_FROM, cb->m_dy_plain};
        a2[1] = (dnnl_exec_arg_t){DNNL_ARG_TO, cb->m_dy};
        if (cs_dnnl_exec(cb->r_in, stream, 2, a2, cb->sc_in, scratch) != dnnl_success)
            return cs_errorf(c->err, CS_EBACKEND, "reorder failed in '%s' backward", n->name);
    }
    /* A strided Conv whose last input rows/columns no window reaches (ONNX
     * pads that make oneDNN's right padding negative) gets no write there
     * from backward-data: those gradients are zero, so start from zero. */
    const dnnl_memory_desc_t *dxmd;
    void *dxp;
    dnnl_memory_get_memory_desc(cb->m_dx, &dxmd);
    dnnl_memory_get_data_handle(cb->m_dx, &dxp);
    memset(dxp, 0, dnnl_memory_desc_get_size(dxmd));
    dnnl_exec_arg_t a3[4] = {{DNNL_ARG_DIFF_DST, cb->m_dy}, {DNNL_ARG_WEIGHTS, cb->m_w},
                             {DNNL_ARG_DIFF_SRC, cb->m_dx}};
    if (cs_dnnl_exec(cb->prim, stream, 3, a3, cb->sc_prim, scratch) != dnnl_success)
        return cs_errorf(c->err, CS_EBACKEND, "convolution backward failed in '%s'", n->name);
    if (cb->r_out) {
        a2[0] = (dnnl_exec_arg_t){DNNL_ARG_FROM, cb->m_dx};
        a2[1] = (dnnl_exec_arg_t){DNNL_ARG_TO, cb->m_dx_plain};
        if (cs_dnnl_exec(cb->r_out, stream, 2, a2, cb->sc_out, scratch) != dnnl_success)
            return cs_errorf(c->err, CS_EBACKEND, "reorder failed in '%s' backward", n->name);
    }
    dnnl_stream_wait(stream);
    int64_t k = cs_shape_numel(shp(c, x));
    cs_bwd *b = c->b;
    if (!b->touched[x]) {
        memcpy(b->grad[x], cb->dx_plain, (size_t)k * sizeof(float));
        b->touched[x] = true;
    } else {
        for (int64_t i = 0; i < k; i++) b->grad[x][i] += cb->dx_plain[i];
    }
    return CS_OK;
}

cs_status cs_bwd_run(cs_bwd *b, dnnl_stream_t stream, void *scratch, const int *classes, cs_error *err) {
    const cs_graph *g = &b->m->g;
    b->dnnl_scratch = scratch;
    int out = g->outputs[0];
    const cs_shape *os = cs_plan_shape(b->p, out);
    int64_t batch = os->dims[0], ncls = cs_shape_numel(os) / batch;
    memset(b->touched, 0, (size_t)b->nvalues * sizeof(bool));
    float *go = b->grad[out];
    memset(go, 0, (size_t)cs_shape_numel(os) * sizeof(float));
    for (int64_t i = 0; i < batch; i++) {
        if (classes[i] < 0 || classes[i] >= ncls)
            return cs_errorf(err, CS_EINVAL, "class %d out of range (the model has %lld classes)",
                             classes[i], (long long)ncls);
        go[i * ncls + classes[i]] = 1.f;
    }
    b->touched[out] = true;
    for (int r = b->nregion - 1; r >= 0; r--) {
        int ni = b->region[r];
        const cs_node *n = &g->nodes[ni];
        bctx c = {b, n, err};
        /* a node none of whose outputs got a gradient contributes nothing */
        bool any = false;
        for (int o = 0; o < n->noutputs; o++)
            any = any || (n->outputs[o] >= 0 && b->in_d[n->outputs[o]] && b->touched[n->outputs[o]]);
        if (!any) continue;
        for (int o = 0; o < n->noutputs; o++) { /* untouched outputs are zero */
            int v = n->outputs[o];
            if (v >= 0 && b->in_d[v] && !b->touched[v]) {
                memset(b->grad[v], 0, (size_t)cs_shape_numel(cs_plan_shape(b->p, v)) * sizeof(float));
                b->touched[v] = true;
            }
        }
        cs_status st;
        switch (n->op) {
        case CS_OP_CONV: st = bwd_conv(&c, &b->convs[r], stream); break;
        case CS_OP_GEMM: st = bwd_gemm(&c); break;
        case CS_OP_MATMUL: st = bwd_matmul(&c); break;
        case CS_OP_ADD: case CS_OP_SUB: case CS_OP_MUL: case CS_OP_DIV: st = bwd_binary(&c); break;
        case CS_OP_POW: st = bwd_pow(&c); break;
        case CS_OP_RELU: case CS_OP_CLIP: case CS_OP_LEAKYRELU: case CS_OP_SIGMOID:
        case CS_OP_HARDSIGMOID: case CS_OP_HARDSWISH: case CS_OP_TANH: case CS_OP_ERF:
        case CS_OP_SQRT: case CS_OP_EXP: case CS_OP_NEG: case CS_OP_RECIPROCAL: case CS_OP_GELU:
        case CS_OP_IDENTITY: case CS_OP_DROPOUT:
            st = bwd_unary(&c);
            break;
        case CS_OP_FLATTEN: case CS_OP_RESHAPE: case CS_OP_SQUEEZE: case CS_OP_UNSQUEEZE:
            st = bwd_copy(&c);
            break;
        case CS_OP_GLOBALAVGPOOL: case CS_OP_GLOBALMAXPOOL: st = bwd_global_pool(&c); break;
        case CS_OP_MAXPOOL: case CS_OP_AVGPOOL: st = bwd_pool(&c); break;
        case CS_OP_REDUCEMEAN: case CS_OP_REDUCESUM: st = bwd_reducemean(&c); break;
        case CS_OP_CONCAT: st = bwd_concat(&c); break;
        case CS_OP_SPLIT: st = bwd_split(&c); break;
        case CS_OP_SLICE: st = bwd_slice(&c); break;
        case CS_OP_TRANSPOSE: st = bwd_transpose(&c); break;
        case CS_OP_BATCHNORM: st = bwd_batchnorm(&c); break;
        case CS_OP_PAD: st = bwd_pad(&c); break;
        case CS_OP_SOFTMAX: st = bwd_softmax(&c); break;
        case CS_OP_LAYERNORM: st = bwd_layernorm(&c); break;
        default:
            st = cs_errorf(err, CS_EUNSUPPORTED, "no gradient for op %s (node '%s') between the layer and the output",
                           n->op_type, n->name);
        }
        if (st != CS_OK) return st;
    }
    return CS_OK;
}
