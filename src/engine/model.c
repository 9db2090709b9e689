/* Models and sessions.
 *
 * cs_model_load = parse → load-time passes → a first plan (batch 1, or the
 * batch the graph was exported with) that validates every shape, packs the
 * weights into the model and finds the Grad-CAM layer candidates.  After it
 * returns, nothing in the model is written again. */
#include "engine/engine_internal.h"
#include "onnx/onnx_load.h"
#ifdef CS_HAVE_CUDA
#include "camserve/cuda.h"
#endif

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- load-time passes --------------------------------------------------------- */

/* Folds nodes whose inputs are all constant whatever the batch (Constant,
 * weight transposes, …).  Batch-dependent chains are folded per plan. */
static cs_status fold_constants(cs_graph *g, cs_error *err) {
    for (int ni = 0; ni < g->nnodes; ni++) {
        cs_node *n = &g->nodes[ni];
        if (n->dead) continue;
        bool all = true;
        for (int i = 0; i < n->ninputs && all; i++)
            if (n->inputs[i] >= 0 && !g->values[n->inputs[i]].data) all = false;
        if (!all) continue;
        const cs_shape *in[64];
        const void *ind[64];
        cs_shape outs[64];
        void *outd[64];
        if (n->ninputs > 64 || n->noutputs > 64) continue;
        for (int i = 0; i < n->ninputs; i++) {
            in[i] = n->inputs[i] >= 0 ? &g->values[n->inputs[i]].shape : NULL;
            ind[i] = n->inputs[i] >= 0 ? g->values[n->inputs[i]].data : NULL;
        }
        memset(outs, 0, sizeof outs);
        cs_status st = cs_op_infer(g, n, in, ind, outs, err);
        if (st != CS_OK) return cs_error_prefix(err, "constant folding");
        for (int o = 0; o < n->noutputs; o++) {
            int64_t ne = cs_shape_numel(&outs[o]);
            size_t es = cs_dtype_size(outs[o].dtype);
            if (ne < 0 || !es)
                return cs_errorf(err, CS_EFORMAT, "node '%s' (%s): constant output has no size",
                                 n->name, n->op_type);
            outd[o] = cs_arena_alloc(&g->arena, (size_t)ne * es + 1);
            if (!outd[o]) return cs_errorf(err, CS_ENOMEM, "out of memory folding constants");
        }
        st = cs_op_ref_run(g, n, in, ind, outs, outd, err);
        if (st != CS_OK) return cs_error_prefix(err, "constant folding");
        for (int o = 0; o < n->noutputs; o++) {
            if (n->outputs[o] < 0) continue;
            cs_value *v = &g->values[n->outputs[o]];
            v->shape = outs[o];
            v->data = outd[o];
            v->producer = -1;
        }
        n->dead = true;
    }
    return CS_OK;
}

static int consumers_of(const cs_graph *g, int v, int *first) {
    int n = 0;
    /* (folded BatchNormalization nodes stay in the graph, see cs_node) */
    for (int ni = 0; ni < g->nnodes; ni++) {
        const cs_node *c = &g->nodes[ni];
        if (c->dead) continue;
        for (int i = 0; i < c->ninputs; i++)
            if (c->inputs[i] == v) {
                if (n == 0 && first) *first = ni;
                n++;
            }
    }
    return n;
}

/* Conv → BatchNormalization becomes one Conv with scaled weights and a
 * bias: W'[o] = W[o]·γ/√(σ²+ε), b'[o] = (b[o] − μ)·γ/√(σ²+ε) + β.  The
 * Conv then writes the BN's output value; the pre-BN tensor disappears (it
 * is not a Grad-CAM candidate: inspect lists only tensors that exist). */
static cs_status fold_batchnorm(cs_graph *g, cs_error *err) {
    /* Room for two new constants per fold, allocated once. */
    int nbn = 0;
    for (int ni = 0; ni < g->nnodes; ni++) nbn += g->nodes[ni].op == CS_OP_BATCHNORM;
    if (nbn == 0) return CS_OK;
    cs_value *nv = cs_arena_alloc(&g->arena, (size_t)(g->nvalues + 2 * nbn) * sizeof(cs_value));
    if (!nv) return cs_errorf(err, CS_ENOMEM, "out of memory");
    memcpy(nv, g->values, (size_t)g->nvalues * sizeof(cs_value));
    g->values = nv;
    for (int ni = 0; ni < g->nnodes; ni++) {
        cs_node *c = &g->nodes[ni];
        if (c->dead || c->op != CS_OP_CONV || c->ninputs < 2) continue;
        int y = c->outputs[0];
        int bi = -1;
        if (y < 0 || c->inputs[1] < 0) continue;
        if (g->values[y].is_graph_output || c->fold_bn >= 0 || consumers_of(g, y, &bi) != 1) continue;
        cs_node *bn = &g->nodes[bi];
        if (bn->op != CS_OP_BATCHNORM || bn->ninputs != 5 || bn->inputs[0] != y) continue;
        if (bn->noutputs > 1 && bn->outputs[1] >= 0) continue; /* training-mode outputs */
        cs_value *w = &g->values[c->inputs[1]];
        cs_value *bias = c->ninputs > 2 && c->inputs[2] >= 0 ? &g->values[c->inputs[2]] : NULL;
        cs_value *p[4];
        bool ok = w->data && w->shape.dtype == CS_DT_FLOAT && w->shape.ndim == 4 &&
                  (!bias || (bias->data && bias->shape.dtype == CS_DT_FLOAT));
        for (int i = 0; i < 4 && ok; i++) {
            if (bn->inputs[1 + i] < 0) {
                ok = false;
                break;
            }
            p[i] = &g->values[bn->inputs[1 + i]];
            ok = p[i]->data && p[i]->shape.dtype == CS_DT_FLOAT &&
                 cs_shape_numel(&p[i]->shape) == w->shape.dims[0];
        }
        if (!ok) continue;
        if (w->shape.dims[0] <= 0) continue;
        int64_t oc = w->shape.dims[0], per = cs_shape_numel(&w->shape) / oc;
        float eps = cs_attr_float(bn, "epsilon", 1e-5f);
        const float *gamma = p[0]->data, *beta = p[1]->data, *mean = p[2]->data, *var = p[3]->data;
        float *nw = cs_arena_alloc(&g->arena, (size_t)(oc * per) * sizeof(float));
        float *nb = cs_arena_alloc(&g->arena, (size_t)oc * sizeof(float));
        if (!nw || !nb) return cs_errorf(err, CS_ENOMEM, "out of memory folding BatchNormalization");
        const float *ow = w->data;
        for (int64_t o = 0; o < oc; o++) {
            /* in double: the fold should not add rounding PyTorch lacks */
            double s = (double)gamma[o] / sqrt((double)var[o] + (double)eps);
            for (int64_t k = 0; k < per; k++) nw[o * per + k] = (float)((double)ow[o * per + k] * s);
            double b0 = bias ? (double)((const float *)bias->data)[o] : 0.0;
            nb[o] = (float)((b0 - (double)mean[o]) * s + (double)beta[o]);
        }
        /* New constant values for the folded weights (a value is never
         * rewritten: other nodes may share the original). */
        int vw = g->nvalues, vb = g->nvalues + 1;
        g->nvalues += 2;
        g->values[vw] = (cs_value){.name = "", .shape = g->values[c->inputs[1]].shape, .data = nw,
                                   .producer = -1};
        g->values[vb] = (cs_value){.name = "", .shape = {.dtype = CS_DT_FLOAT, .ndim = 1, .dims = {oc}},
                                   .data = nb, .producer = -1};
        c->fold_bn = bi;
        c->pre_bn_w = c->inputs[1];
        c->pre_bn_b = bias ? c->inputs[2] : -1;
        c->pre_bn_out = y;
        c->inputs[1] = vw;
        c->inputs[2] = vb; /* the loader left room for a third input */
        c->ninputs = 3;
        c->outputs[0] = bn->outputs[0];
        g->values[bn->outputs[0]].producer = ni;
    }
    return CS_OK;
}

/* ---- layers ---------------------------------------------------------------------- */

static bool is_global_pool(const cs_graph *g, const cs_node *n, const cs_shape *y) {
    if (n->op == CS_OP_GLOBALAVGPOOL || n->op == CS_OP_GLOBALMAXPOOL) return true;
    if (n->op == CS_OP_REDUCEMEAN) return true;
    if ((n->op == CS_OP_AVGPOOL || n->op == CS_OP_MAXPOOL) && y && y->ndim == 4 &&
        y->dims[2] == 1 && y->dims[3] == 1)
        return true;
    (void)g;
    return false;
}

static cs_status find_layers(cs_model *m, cs_plan *p, cs_error *err) {
    cs_graph *g = &m->g;
    m->layers = malloc((size_t)g->nvalues * sizeof(int));
    m->layer_dims = malloc((size_t)g->nvalues * sizeof *m->layer_dims);
    if (!m->layers || !m->layer_dims) return cs_errorf(err, CS_ENOMEM, "out of memory");
    m->default_layer = -1;
    int first_pool_input = -1;
    for (int ni = 0; ni < g->nnodes; ni++) {
        const cs_node *n = &g->nodes[ni];
        if (n->dead) continue;
        for (int o = -1; o < n->noutputs; o++) {
            /* o = -1: the pre-BN output of a Conv with a folded BN */
            int v = o < 0 ? (n->fold_bn >= 0 ? n->pre_bn_out : -1) : n->outputs[o];
            if (v < 0 || g->values[v].data || (o >= 0 && g->values[v].producer != ni)) continue;
            const cs_shape *s = o < 0 ? cs_plan_shape(p, n->outputs[0]) : cs_plan_shape(p, v);
            if (!s || s->ndim != 4 || s->dtype != CS_DT_FLOAT || s->dims[2] * s->dims[3] <= 1)
                continue;
            m->layer_dims[m->nlayers][0] = 1; /* per image, whatever batch the first plan had */
            m->layer_dims[m->nlayers][1] = s->dims[1];
            m->layer_dims[m->nlayers][2] = s->dims[2];
            m->layer_dims[m->nlayers][3] = s->dims[3];
            m->layers[m->nlayers++] = v;
        }
        if (n->ninputs > 0 && n->inputs[0] >= 0 &&
            is_global_pool(g, n, n->outputs[0] >= 0 ? cs_plan_shape(p, n->outputs[0]) : NULL))
            first_pool_input = n->inputs[0]; /* the last one wins: the head's pool */
    }
    for (int i = 0; i < m->nlayers; i++)
        if (m->layers[i] == first_pool_input) m->default_layer = i;
    if (m->default_layer < 0 && m->nlayers > 0) m->default_layer = m->nlayers - 1;
    return CS_OK;
}

static cs_status op_histogram(cs_model *m, const cs_graph *g, cs_error *err) {
    m->hist_names = calloc((size_t)g->nnodes + 1, sizeof(char *));
    m->hist_counts = calloc((size_t)g->nnodes + 1, sizeof(int));
    if (!m->hist_names || !m->hist_counts) return cs_errorf(err, CS_ENOMEM, "out of memory");
    for (int ni = 0; ni < g->nnodes; ni++) {
        const char *t = g->nodes[ni].op_type;
        int k = 0;
        while (k < m->nhist && strcmp(m->hist_names[k], t) != 0) k++;
        if (k == m->nhist) m->hist_names[m->nhist++] = t;
        m->hist_counts[k]++;
    }
    return CS_OK;
}

/* ---- public: model --------------------------------------------------------------- */

static cs_status model_finish(cs_model *m, int pack, cs_error *err);

static cs_status model_init(cs_model *m, const cs_model_options *opt, cs_error *err) {
    cs_graph *g = &m->g;
    m->num_threads = opt && opt->num_threads > 0 ? opt->num_threads : omp_get_num_procs();
    cs_status st = op_histogram(m, g, err);
    if (st != CS_OK) return st;
    m->info.num_nodes = g->nnodes;
    m->info.opset = (int)g->opset;
    for (int v = 0; v < g->nvalues; v++)
        if (g->values[v].data && g->values[v].shape.dtype == CS_DT_FLOAT && g->values[v].name[0])
            m->info.num_params += cs_shape_numel(&g->values[v].shape);

    double t0 = cs_now_ms();
    st = fold_constants(g, err);
    if (st == CS_OK) st = fold_batchnorm(g, err);
    if (st != CS_OK) return st;
    if (getenv("CS_TRACE")) fprintf(stderr, "load: folding %.1f ms\n", cs_now_ms() - t0);

    return model_finish(m, 1, err);
}

/* The part of loading shared with the prepared-model path: engine, the
 * first plan (validation, packing when pack is set), layers, counts. */
static cs_status model_finish(cs_model *m, int pack, cs_error *err) {
    cs_graph *g = &m->g;
    cs_status st;
    cs_value *in = &g->values[g->inputs[0]];
    cs_value *out = &g->values[g->outputs[0]];
    if (in->shape.dtype != CS_DT_FLOAT || in->shape.ndim != 4)
        return cs_errorf(err, CS_EUNSUPPORTED,
                         "model input '%s' must be a 4-D float tensor (N,C,H,W)", in->name);
    m->info.input_name = in->name;
    m->info.output_name = out->name;
    for (int i = 0; i < 4; i++) m->info.input_dims[i] = in->shape.dims[i];

    if (dnnl_engine_create(&m->eng, dnnl_cpu, 0) != dnnl_success)
        return cs_errorf(err, CS_EBACKEND, "oneDNN CPU engine could not be created");
    if (!m->packed) m->packed = calloc((size_t)g->nnodes + 1, sizeof(cs_packed));
    m->bwd_packed = calloc((size_t)g->nnodes + 1, sizeof(cs_packed));
    if (!m->packed || !m->bwd_packed) return cs_errorf(err, CS_ENOMEM, "out of memory");

    /* The plan at the smallest batch the graph takes (1, or the batch it
     * was exported with): validates shapes, packs weights into the model. */
    const int b0 = in->shape.dims[0] > 0 ? (int)in->shape.dims[0] : 1;
    cs_plan *p;
    st = cs_plan_build(m, b0, NULL, 0, pack, -1, &p, err);
    if (st != CS_OK) return st;
    const cs_shape *os = cs_plan_shape(p, g->outputs[0]);
    if (!os || os->ndim < 2 || os->dtype != CS_DT_FLOAT || os->dims[0] != b0) {
        cs_plan_free(p);
        return cs_errorf(err, CS_EUNSUPPORTED, "model output '%s' must be a float tensor of N x classes",
                         out->name);
    }
    int64_t classes = 1;
    for (int i = 1; i < os->ndim; i++) classes *= os->dims[i];
    m->info.num_classes = classes;
    m->info.flops = cs_plan_flops(p);
    m->info.num_kernels = cs_plan_num_kernels(p);
    st = find_layers(m, p, err);
    cs_plan_free(p);
    return st;
}

/* ---- devices -------------------------------------------------------------------- */

const char *cs_precision_name(cs_precision p) {
    switch (p) {
    case CS_PRECISION_FP32: return "fp32";
    case CS_PRECISION_FP16: return "fp16";
    case CS_PRECISION_BF16: return "bf16";
    default: return "default";
    }
}

cs_status cs_precision_parse(const char *s, cs_precision *out, cs_error *err) {
    static const cs_precision all[] = {CS_PRECISION_DEFAULT, CS_PRECISION_FP32, CS_PRECISION_FP16,
                                       CS_PRECISION_BF16};
    for (size_t i = 0; s && i < sizeof all / sizeof *all; i++)
        if (strcmp(s, cs_precision_name(all[i])) == 0) {
            *out = all[i];
            return CS_OK;
        }
    return cs_errorf(err, CS_EINVAL, "precision must be fp32, fp16 or bf16, got '%s'", s ? s : "");
}

/* The device index opt asks for: -1 for the CPU, else the GPU's.  "auto"
 * (*is_auto set) is cuda:0 where camserve has CUDA and a GPU is usable. */
static cs_status resolve_device(const cs_model_options *opt, int *index, bool *is_auto, cs_error *err) {
    const char *dev = opt && opt->device ? opt->device : "cpu";
    *is_auto = strcmp(dev, "auto") == 0;
    *index = -1;
    if (*is_auto) {
#ifdef CS_HAVE_CUDA
        int n = 0;
        if (cs_cuda_device_count(&n, NULL) == CS_OK && n > 0) *index = 0;
#endif
    } else if (strcmp(dev, "cuda") == 0) {
        *index = 0;
    } else if (strncmp(dev, "cuda:", 5) == 0) {
        char *end;
        long v = strtol(dev + 5, &end, 10);
        if (!dev[5] || *end || v < 0 || v > 255)
            return cs_errorf(err, CS_EINVAL, "device must be cpu, cuda, cuda:N or auto, got '%s'", dev);
        *index = (int)v;
    } else if (strcmp(dev, "cpu") != 0) {
        return cs_errorf(err, CS_EINVAL, "device must be cpu, cuda, cuda:N or auto, got '%s'", dev);
    }
    return CS_OK;
}

int cs_cpu_has_bf16(void) {
    /* oneDNN's ISA values are nested bit sets: AVX512_BF16 and AMX include
     * this one.  Without native bf16 dot products oneDNN would emulate
     * them, slower than fp32. */
    unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    return (isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) == (unsigned)dnnl_cpu_isa_avx512_core_bf16;
}

void cs_cpu_describe(char *buf, size_t len) {
    static const struct { dnnl_cpu_isa_t isa; const char *name; } names[] = {
        {dnnl_cpu_isa_avx512_core_amx, "avx512_core_amx"}, {dnnl_cpu_isa_avx512_core_bf16, "avx512_core_bf16"},
        {dnnl_cpu_isa_avx512_core_vnni, "avx512_core_vnni"}, {dnnl_cpu_isa_avx512_core, "avx512_core"},
        {dnnl_cpu_isa_avx2_vnni, "avx2_vnni"}, {dnnl_cpu_isa_avx2, "avx2"}, {dnnl_cpu_isa_avx, "avx"},
        {dnnl_cpu_isa_sse41, "sse41"},
    };
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    const char *name = "unknown";
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (isa == names[i].isa) {
            name = names[i].name;
            break;
        }
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, len, "oneDNN %d.%d.%d on %s, bf16 %s", v->major, v->minor, v->patch, name,
             cs_cpu_has_bf16() ? "native" : "not native (--precision bf16 refused on the CPU)");
}

/* Before the CPU plans are built: the device (m->device_index, resolved
 * once: "auto" asks the CUDA runtime) and, for the CPU, whether its plans
 * run convolutions in bf16.  A GPU device leaves the CPU plans fp32: they
 * only validate the graph. */
static cs_status pick_device(cs_model *m, const cs_model_options *opt, cs_error *err) {
    bool is_auto;
    cs_status st = resolve_device(opt, &m->device_index, &is_auto, err);
    if (st != CS_OK || m->device_index >= 0) return st;
    cs_precision prec = opt ? opt->precision : CS_PRECISION_DEFAULT;
    m->precision = CS_PRECISION_FP32;
    if (prec == CS_PRECISION_BF16 && cs_cpu_has_bf16()) {
        m->precision = CS_PRECISION_BF16;
        return CS_OK;
    }
    /* "auto" falling back to the CPU keeps working in fp32; an explicit
     * cpu with a precision it cannot compute in is a mistake */
    if (is_auto || prec == CS_PRECISION_DEFAULT || prec == CS_PRECISION_FP32) return CS_OK;
    if (prec == CS_PRECISION_BF16)
        return cs_errorf(err, CS_EUNSUPPORTED, "precision bf16 on the CPU needs AVX512_BF16 or AMX, "
                                               "which this CPU lacks; use fp32 (or --device cuda)");
    return cs_errorf(err, CS_EUNSUPPORTED, "precision %s needs a GPU device (--device cuda); "
                                           "the CPU backend computes in fp32 or bf16",
                     cs_precision_name(prec));
}

/* Puts m on the device pick_device chose: nothing to do for the CPU (the
 * load already built everything, in the precision pick_device chose), the
 * backend's model_init for a GPU. */
static cs_status model_attach_device(cs_model *m, const cs_model_options *opt, cs_error *err) {
    cs_precision prec = opt ? opt->precision : CS_PRECISION_DEFAULT;
    const int index = m->device_index;
    (void)prec; /* without CUDA */
    if (index < 0) {
        snprintf(m->device, sizeof m->device, "cpu");
        return CS_OK;
    }
    if (prec == CS_PRECISION_DEFAULT) prec = CS_PRECISION_FP16;
#ifdef CS_HAVE_CUDA
    m->be = cs_cuda_backend();
    cs_status st = m->be->model_init(m, index, prec, &m->be_model, err);
    if (st != CS_OK) {
        m->be = NULL;
        m->be_model = NULL;
        return st;
    }
    snprintf(m->device, sizeof m->device, "cuda:%d", index);
    m->precision = prec;
    return CS_OK;
#else
    return cs_errorf(err, CS_EUNSUPPORTED, "device '%s': camserve was built without CUDA support", opt->device);
#endif
}

const char *cs_model_device(const cs_model *m) { return m->device[0] ? m->device : "cpu"; }
cs_precision cs_model_precision(const cs_model *m) {
    return m->precision == CS_PRECISION_DEFAULT ? CS_PRECISION_FP32 : m->precision;
}

cs_status cs_model_load_buffer(const void *buf, size_t len, const cs_model_options *opt,
                               cs_model **out, cs_error *err) {
    *out = NULL;
    cs_model *m = calloc(1, sizeof *m);
    if (!m) return cs_errorf(err, CS_ENOMEM, "out of memory");
    pthread_mutex_init(&m->bwd_lock, NULL);
    double t0 = cs_now_ms();
    if (opt && (opt->compute_digest || opt->prepared_dir)) {
        if (!cs_sha256(buf, len, m->digest)) {
            cs_model_free(m);
            return cs_errorf(err, CS_EINTERNAL, "SHA-256 failed");
        }
        m->have_digest = true;
    }
    cs_status st = pick_device(m, opt, err);
    if (st == CS_OK) st = cs_onnx_parse(buf, len, &m->g, err);
    double t1 = cs_now_ms();
    if (st == CS_OK) st = model_init(m, opt, err);
    if (st == CS_OK) st = model_attach_device(m, opt, err);
    if (getenv("CS_TRACE")) fprintf(stderr, "load: parse %.1f ms, init %.1f ms\n", t1 - t0, cs_now_ms() - t1);
    if (st != CS_OK) {
        cs_model_free(m);
        return st;
    }
    *out = m;
    return CS_OK;
}

cs_status cs_model_load(const char *path, const cs_model_options *opt, cs_model **out,
                        cs_error *err) {
    *out = NULL;
    if (opt && opt->prepared_dir) {
        cs_model *m = calloc(1, sizeof *m);
        if (!m) return cs_errorf(err, CS_ENOMEM, "out of memory");
        pthread_mutex_init(&m->bwd_lock, NULL);
        m->num_threads = opt->num_threads > 0 ? opt->num_threads : omp_get_num_procs();
        cs_error perr = {0};
        cs_status pst = pick_device(m, opt, err);
        if (pst != CS_OK) {
            cs_model_free(m);
            return cs_error_prefix(err, "%s", path);
        }
        pst = cs_prepared_load(opt->prepared_dir, path, m, &perr);
        if (pst == CS_OK) pst = op_histogram(m, &m->g, &perr);
        if (pst == CS_OK) pst = model_finish(m, 0, &perr);
        if (pst == CS_OK && (m->path = strdup(path))) {
            /* a device that cannot take the model fails the load: the
             * ONNX path below would fail the same way */
            pst = model_attach_device(m, opt, err);
            if (pst != CS_OK) {
                cs_model_free(m);
                return cs_error_prefix(err, "%s", path);
            }
            *out = m;
            return CS_OK;
        }
        /* no entry, or an unusable one: load the ONNX file and (re)write it */
        if (pst != CS_ENOTFOUND && getenv("CS_TRACE")) fprintf(stderr, "prepared: %s\n", perr.msg);
        cs_model_free(m);
    }
    /* mmap, not read: protobuf-c copies what it keeps anyway, so the file
     * is only paged through once */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cs_errorf(err, CS_EIO, "cannot open model %s: %s", path, strerror(errno));
    struct stat sb;
    cs_status st = CS_OK;
    void *map = MAP_FAILED;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) st = cs_errorf(err, CS_EIO, "cannot read model %s", path);
    else if (sb.st_size > (2L << 30)) st = cs_errorf(err, CS_ELIMIT, "model %s is larger than 2 GiB", path);
    else if (sb.st_size == 0) st = cs_errorf(err, CS_EFORMAT, "%s: invalid ONNX model: empty file", path);
    else if ((map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED)
        st = cs_errorf(err, CS_EIO, "cannot map model %s: %s", path, strerror(errno));
    close(fd);
    if (st == CS_OK) {
        st = cs_model_load_buffer(map, (size_t)sb.st_size, opt, out, err);
        if (st != CS_OK) cs_error_prefix(err, "%s", path);
        munmap(map, (size_t)sb.st_size);
    }
    if (st == CS_OK) {
        (*out)->path = strdup(path);
        if (!(*out)->path) {
            cs_model_free(*out);
            *out = NULL;
            return cs_errorf(err, CS_ENOMEM, "out of memory");
        }
        /* a cache that cannot be written costs the next start time, not
         * this load */
        cs_error werr = {0};
        if (opt && opt->prepared_dir && cs_prepared_store(opt->prepared_dir, path, *out, &werr) != CS_OK)
            fprintf(stderr, "camserve: prepared-model cache not written: %s\n", werr.msg);
    }
    return st;
}

int cs_model_digest(const cs_model *m, uint8_t out[32]) {
    if (!m->have_digest) return 0;
    memcpy(out, m->digest, 32);
    return 1;
}

int cs_model_from_cache(const cs_model *m) { return m->prep_map != NULL; }

void cs_model_free(cs_model *m) {
    if (!m) return;
    if (m->be && m->be_model) m->be->model_free(m->be_model);
    if (m->eng) dnnl_engine_destroy(m->eng);
    cs_arena_free(&m->pack_arena);
    cs_arena_free(&m->bwd_arena);
    pthread_mutex_destroy(&m->bwd_lock);
    free(m->packed);
    free(m->bwd_packed);
    free(m->layers);
    free(m->layer_dims);
    free(m->hist_names);
    free(m->hist_counts);
    free(m->path);
    cs_graph_free(&m->g);
    if (m->prep_map) munmap(m->prep_map, m->prep_len);
    free(m);
}

void cs_model_get_info(const cs_model *m, cs_model_info *out) { *out = m->info; }

const char *cs_model_metadata(const cs_model *m, const char *key) {
    for (int i = 0; i < m->g.nmeta; i++)
        if (strcmp(m->g.meta_keys[i], key) == 0) return m->g.meta_values[i];
    return NULL;
}

const char *cs_model_path(const cs_model *m) { return m->path ? m->path : ""; }

int cs_model_op_histogram(const cs_model *m, const char ***names, const int **counts) {
    *names = m->hist_names;
    *counts = m->hist_counts;
    return m->nhist;
}

int cs_model_num_layers(const cs_model *m) { return m->nlayers; }
const char *cs_model_layer_name(const cs_model *m, int i) {
    return (i >= 0 && i < m->nlayers) ? m->g.values[m->layers[i]].name : NULL;
}
void cs_model_layer_dims(const cs_model *m, int i, int64_t dims[4]) {
    for (int k = 0; k < 4; k++) dims[k] = (i >= 0 && i < m->nlayers) ? m->layer_dims[i][k] : 0;
}
int cs_model_default_layer(const cs_model *m) { return m->default_layer; }
int cs_model_find_layer(const cs_model *m, const char *name) {
    for (int i = 0; i < m->nlayers; i++)
        if (strcmp(m->g.values[m->layers[i]].name, name) == 0) return i;
    return -1;
}

/* ---- public: session ------------------------------------------------------------ */

#define SESSION_MAX_PLANS 8

typedef struct plan_slot {
    int batch;
    int nkeep;
    int *keep; /* sorted value indices */
    cs_plan *plan;
    cs_bwd *bwd; /* explanation plans only */
    int bwd_nlayers, bwd_layers[16]; /* the layers bwd was built for */
    int override_v;
    unsigned long last_used;
} plan_slot;

struct cs_session {
    const cs_model *m;
    void *be; /* the device backend's session (m->be), else NULL */
    dnnl_stream_t stream;
    plan_slot slots[SESSION_MAX_PLANS];
    unsigned long tick;
    plan_slot *explain;  /* the slot of the last cs_session_forward_keep */
    bool have_grad;
    int nlayers;
    int layers[16];      /* value indices */
    /* oneDNN scratchpad of every plan and backward above (they run one at a
     * time), grown to the largest need */
    void *scratch;
    size_t scratch_cap;
};

static cs_status session_scratch(cs_session *s, size_t need, cs_error *err) {
    if (need <= s->scratch_cap) return CS_OK;
    free(s->scratch);
    s->scratch_cap = 0;
    s->scratch = aligned_alloc(64, (need + 63) & ~(size_t)63);
    if (!s->scratch) return cs_errorf(err, CS_ENOMEM, "out of memory: oneDNN scratchpad of %zu bytes", need);
    s->scratch_cap = need;
    return CS_OK;
}

cs_status cs_session_create(const cs_model *m, cs_session **out, cs_error *err) {
    *out = NULL;
    cs_session *s = calloc(1, sizeof *s);
    if (!s) return cs_errorf(err, CS_ENOMEM, "out of memory");
    s->m = m;
    if (m->be) {
        cs_status st = m->be->session_create(m, m->be_model, &s->be, err);
        if (st != CS_OK) {
            free(s);
            return st;
        }
        *out = s;
        return CS_OK;
    }
    if (dnnl_stream_create(&s->stream, m->eng, dnnl_stream_default_flags) != dnnl_success) {
        free(s);
        return cs_errorf(err, CS_EBACKEND, "oneDNN stream could not be created");
    }
    *out = s;
    return CS_OK;
}

void cs_session_free(cs_session *s) {
    if (!s) return;
    if (s->be) {
        s->m->be->session_free(s->be);
        free(s);
        return;
    }
    for (int i = 0; i < SESSION_MAX_PLANS; i++) {
        cs_bwd_free(s->slots[i].bwd);
        cs_plan_free(s->slots[i].plan);
        free(s->slots[i].keep);
    }
    dnnl_stream_destroy(s->stream);
    free(s->scratch);
    free(s);
}

/* Finds or builds the plan for (batch, keep set); evicts the least recently
 * used one when all slots are taken, so a session's memory is bounded. */
static cs_status session_slot(cs_session *s, int batch, const int *keep, int nkeep,
                             int override_v, plan_slot **out, cs_error *err) {
    s->tick++;
    int lru = 0;
    for (int i = 0; i < SESSION_MAX_PLANS; i++) {
        plan_slot *sl = &s->slots[i];
        if (sl->plan && sl->batch == batch && sl->nkeep == nkeep && sl->override_v == override_v &&
            (nkeep == 0 || memcmp(sl->keep, keep, (size_t)nkeep * sizeof(int)) == 0)) {
            sl->last_used = s->tick;
            *out = sl;
            return CS_OK;
        }
        if (!sl->plan || (s->slots[lru].plan && sl->last_used < s->slots[lru].last_used)) lru = i;
    }
    plan_slot *sl = &s->slots[lru];
    if (s->explain == sl) s->explain = NULL;
    cs_bwd_free(sl->bwd);
    cs_plan_free(sl->plan);
    free(sl->keep);
    memset(sl, 0, sizeof *sl);
    cs_status st = cs_plan_build((cs_model *)s->m, batch, keep, nkeep, 0, override_v, &sl->plan, err);
    if (st != CS_OK) return st;
    /* the caller's logits buffer holds batch x classes: a model whose
     * output does not scale with the batch cannot be run at this size */
    const cs_shape *os = cs_plan_shape(sl->plan, s->m->g.outputs[0]);
    if (!os || cs_shape_numel(os) != (int64_t)batch * s->m->info.num_classes) {
        cs_plan_free(sl->plan);
        sl->plan = NULL;
        return cs_errorf(err, CS_EUNSUPPORTED, "the model's output is not batch x classes at batch %d",
                         batch);
    }
    if (nkeep) {
        sl->keep = malloc((size_t)nkeep * sizeof(int));
        if (!sl->keep) {
            cs_plan_free(sl->plan);
            sl->plan = NULL;
            return cs_errorf(err, CS_ENOMEM, "out of memory");
        }
        memcpy(sl->keep, keep, (size_t)nkeep * sizeof(int));
    }
    sl->batch = batch;
    sl->nkeep = nkeep;
    sl->override_v = override_v;
    sl->last_used = s->tick;
    *out = sl;
    return CS_OK;
}

static cs_status check_input(const cs_session *s, const float *input, int batch, cs_error *err) {
    if (batch < 1 || batch > 4096) return cs_errorf(err, CS_EINVAL, "batch must be 1..4096, got %d", batch);
    const int64_t *d = s->m->info.input_dims;
    int64_t n = (int64_t)batch * d[1] * d[2] * d[3];
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(input[i]))
            return cs_errorf(err, CS_EINVAL, "input has a non-finite value (NaN or Inf) at index %lld",
                             (long long)i);
    return CS_OK;
}

cs_status cs_session_run(cs_session *s, const float *input, int batch, float *logits,
                         cs_error *err) {
    cs_status st = check_input(s, input, batch, err);
    if (st == CS_OK && s->be) return s->m->be->run(s->be, input, batch, logits, err);
    plan_slot *sl;
    if (st == CS_OK) st = session_slot(s, batch, NULL, 0, -1, &sl, err);
    if (st == CS_OK) st = session_scratch(s, cs_plan_scratch_size(sl->plan), err);
    if (st != CS_OK) return st;
    return cs_plan_run(sl->plan, s->stream, s->scratch, input, NULL, logits, err);
}

static cs_status run_one(cs_session *s, const float *x, int batch, int layer, const float *vals, float *logits,
                         cs_error *err) {
    return layer < 0 ? cs_session_run(s, x, batch, logits, err)
                     : cs_session_run_with_layer(s, x, batch, layer, vals, logits, err);
}

/* The padded runs of both kinds: layer < 0 is a plain forward; otherwise
 * `vals` (n layer tensors) replace the layer's values and are padded like
 * the inputs. */
static cs_status run_padded(cs_session *s, const float *input, int n, int layer, const float *vals, float *logits,
                            cs_error *err) {
    if (n < 1) return cs_errorf(err, CS_EINVAL, "batch must be >= 1, got %d", n);
    const cs_model_info *info = &s->m->info;
    const int B = info->input_dims[0] > 0 ? (int)info->input_dims[0] : n;
    size_t vper = 0;
    if (layer >= 0) {
        if (layer >= s->m->nlayers) return cs_errorf(err, CS_EINVAL, "layer index %d out of range", layer);
        int64_t d[4];
        cs_model_layer_dims(s->m, layer, d);
        vper = (size_t)(d[1] * d[2] * d[3]);
    }
    const size_t per = (size_t)(info->input_dims[1] * info->input_dims[2] * info->input_dims[3]),
                 nc = (size_t)info->num_classes;
    const int whole = n / B * B, cnt = n - whole;
    for (int b = 0; b < whole; b += B) {
        cs_status st = run_one(s, input + b * per, B, layer, vals ? vals + b * vper : NULL, logits + b * nc, err);
        if (st != CS_OK) return st;
    }
    if (cnt == 0) return CS_OK;
    float *pad = malloc((size_t)B * (per + vper) * sizeof(float)), *plog = malloc((size_t)B * nc * sizeof(float));
    cs_status st = pad && plog ? CS_OK : cs_errorf(err, CS_ENOMEM, "out of memory");
    float *pvals = pad ? pad + (size_t)B * per : NULL;
    for (int i = 0; i < B && st == CS_OK; i++) {
        const int src = whole + (i < cnt ? i : cnt - 1);
        memcpy(pad + i * per, input + src * per, per * sizeof(float));
        if (vper) memcpy(pvals + i * vper, vals + src * vper, vper * sizeof(float));
    }
    if (st == CS_OK) st = run_one(s, pad, B, layer, pvals, plog, err);
    if (st == CS_OK) memcpy(logits + whole * nc, plog, cnt * nc * sizeof(float));
    free(pad);
    free(plog);
    return st;
}

cs_status cs_session_run_padded(cs_session *s, const float *input, int n, float *logits, cs_error *err) {
    return run_padded(s, input, n, -1, NULL, logits, err);
}

cs_status cs_session_run_with_layer_padded(cs_session *s, const float *input, int n, int layer,
                                           const float *layer_values, float *logits, cs_error *err) {
    if (layer < 0) return cs_errorf(err, CS_EINVAL, "layer index %d out of range", layer);
    return run_padded(s, input, n, layer, layer_values, logits, err);
}

cs_status cs_session_run_with_layer(cs_session *s, const float *input, int batch, int layer,
                                    const float *layer_values, float *logits, cs_error *err) {
    const cs_model *m = s->m;
    if (layer < 0 || layer >= m->nlayers) return cs_errorf(err, CS_EINVAL, "layer index %d out of range", layer);
    int v = m->layers[layer];
    cs_status st = check_input(s, input, batch, err);
    if (st == CS_OK && s->be) return m->be->run_with_layer(s->be, input, batch, v, layer_values, logits, err);
    plan_slot *sl;
    if (st == CS_OK) st = session_slot(s, batch, &v, 1, v, &sl, err);
    if (st == CS_OK) st = session_scratch(s, cs_plan_scratch_size(sl->plan), err);
    if (st != CS_OK) return st;
    return cs_plan_run(sl->plan, s->stream, s->scratch, input, layer_values, logits, err);
}

cs_status cs_session_forward_keep(cs_session *s, const float *input, int batch, const int *layers,
                                  int nlayers, float *logits, cs_error *err) {
    const cs_model *m = s->m;
    s->explain = NULL;
    s->have_grad = false;
    if (nlayers < 1 || nlayers > 16)
        return cs_errorf(err, CS_EINVAL, "1 to 16 layers can be explained at once, got %d", nlayers);
    int vals[16];
    for (int i = 0; i < nlayers; i++) {
        if (layers[i] < 0 || layers[i] >= m->nlayers)
            return cs_errorf(err, CS_EINVAL, "layer index %d out of range", layers[i]);
        vals[i] = m->layers[layers[i]];
    }
    cs_status st = check_input(s, input, batch, err);
    if (st == CS_OK && s->be) return m->be->forward_keep(s->be, input, batch, vals, nlayers, logits, err);
    int *keep = NULL, nkeep = 0;
    if (st == CS_OK) st = cs_bwd_keep_set(m, vals, nlayers, &keep, &nkeep, err);
    plan_slot *sl = NULL;
    if (st == CS_OK) st = session_slot(s, batch, keep, nkeep, -1, &sl, err);
    free(keep);
    /* two layer sets can share a keep set (two inputs of one Add), not a
     * backward: its gradients are for the layers it was built for */
    if (st == CS_OK && sl->bwd &&
        (sl->bwd_nlayers != nlayers || memcmp(sl->bwd_layers, vals, (size_t)nlayers * sizeof(int)))) {
        cs_bwd_free(sl->bwd);
        sl->bwd = NULL;
    }
    if (st == CS_OK && !sl->bwd) {
        st = cs_bwd_build((cs_model *)m, sl->plan, vals, nlayers, &sl->bwd, err);
        sl->bwd_nlayers = nlayers;
        memcpy(sl->bwd_layers, vals, (size_t)nlayers * sizeof(int));
    }
    /* the plan's need now includes its backward's */
    if (st == CS_OK) st = session_scratch(s, cs_plan_scratch_size(sl->plan), err);
    if (st == CS_OK) st = cs_plan_run(sl->plan, s->stream, s->scratch, input, NULL, logits, err);
    if (st != CS_OK) return st;
    s->explain = sl;
    s->nlayers = nlayers;
    memcpy(s->layers, vals, (size_t)nlayers * sizeof(int));
    return CS_OK;
}

cs_status cs_session_backward(cs_session *s, const int *classes, cs_error *err) {
    if (s->be) return s->m->be->backward(s->be, classes, err);
    if (!s->explain) return cs_errorf(err, CS_EINVAL, "cs_session_backward needs a forward_keep first");
    cs_status st = cs_bwd_run(s->explain->bwd, s->stream, s->scratch, classes, err);
    s->have_grad = st == CS_OK;
    return st;
}

cs_status cs_session_layer(cs_session *s, int layer, const float **act, const float **grad,
                           int64_t dims[4], cs_error *err) {
    const cs_model *m = s->m;
    if (s->be) {
        if (layer < 0 || layer >= m->nlayers)
            return cs_errorf(err, CS_EINVAL, "layer index %d out of range", layer);
        return m->be->layer(s->be, m->layers[layer], act, grad, dims, err);
    }
    if (!s->explain) return cs_errorf(err, CS_EINVAL, "no explanation run on this session");
    if (layer < 0 || layer >= m->nlayers) return cs_errorf(err, CS_EINVAL, "layer index %d out of range", layer);
    int v = m->layers[layer];
    const cs_shape *sh = cs_plan_shape(s->explain->plan, v);
    *act = cs_plan_value(s->explain->plan, v);
    if (!*act || !sh) return cs_errorf(err, CS_ENOTFOUND, "layer '%s' was not kept", m->g.values[v].name);
    *grad = s->have_grad ? cs_bwd_grad(s->explain->bwd, v) : NULL;
    for (int i = 0; i < 4; i++) dims[i] = sh->dims[i];
    return CS_OK;
}

double cs_session_device_ms(const cs_session *s) {
    return s->be ? s->m->be->device_ms(s->be) : -1;
}

cs_status cs_session_gradcam(cs_session *s, int layer, const float **map, int64_t dims[3],
                             cs_error *err) {
    const cs_model *m = s->m;
    if (layer < 0 || layer >= m->nlayers) return cs_errorf(err, CS_EINVAL, "layer index %d out of range", layer);
    if (!s->be) return cs_errorf(err, CS_EUNSUPPORTED, "the CPU backend computes CAM maps in src/cam");
    return m->be->gradcam(s->be, m->layers[layer], map, dims, err);
}
