/* libFuzzer harness for the model loader: ONNX bytes → cs_model_load_buffer
 * (protobuf decoding, the IR translation, load-time passes and the batch-1
 * plan with shape inference).  Whatever loads is freed again; a model that
 * loads with a small input also gets one session run so that planning for
 * batch 1 and the kernels see fuzzed graphs too, in fp32 and, where the CPU
 * has native bf16, once more in bf16 (its own convolution planning).
 *
 * Built by CMake with -DCS_FUZZ=ON (clang, -fsanitize=fuzzer,address,undefined);
 * run by scripts/run-fuzzers.sh.  Seeds: tests/fuzz/corpus/fuzz_onnx/
 * (tools/make_fuzz_seeds.py). */
#include "camserve/engine.h"
#include "onnx/onnx.pb-c.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__asan_default_options(void);

/* A 1 KB model can legitimately ask for gigabytes (Pad by 2 million rows,
 * Expand to a huge shape): one allocation over 512 MiB fails (NULL, so the
 * engine reports CS_ENOMEM) instead of tripping libFuzzer's -rss_limit_mb /
 * -malloc_limit_mb.  Real memory bugs still crash. */
const char *__asan_default_options(void) {
    return "allocator_may_return_null=1:max_allocation_size_mb=512";
}

/* ---- keeping shapes small ------------------------------------------------
 * Weights are bounded by the file size (the loader checks), but activations
 * are not: a mutated Pad / Reshape / Expand / ConstantOfShape constant, or a
 * graph input of 1x3x99999x99999, makes a tiny file ask for gigabytes, and
 * oneDNN then throws std::bad_alloc through its C API (abort) or libFuzzer
 * stops on -rss_limit_mb.  That is a resource limit the engine should enforce
 * (reported), not a memory bug, so inputs whose integers could blow shapes up
 * are skipped here: every integer constant and attribute must be small
 * (|v| <= 64) or a clamping sentinel (|v| >= 2^62, Slice's "to the end"), and
 * the graph input at most 64K values per image. */
#define SMALL 64

static bool small_int(int64_t v) {
    return (v >= -SMALL && v <= SMALL) || v >= (INT64_C(1) << 62) || v <= -(INT64_C(1) << 62);
}

static bool small_tensor(const Onnx__TensorProto *t) {
    if (!t) return true;
    if (t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__INT64) {
        for (size_t i = 0; i < t->n_int64_data; i++)
            if (!small_int(t->int64_data[i])) return false;
        if (t->has_raw_data)
            for (size_t i = 0; i + 8 <= t->raw_data.len; i += 8) {
                int64_t v;
                memcpy(&v, t->raw_data.data + i, 8);
                if (!small_int(v)) return false;
            }
    } else if (t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__INT32) {
        for (size_t i = 0; i < t->n_int32_data; i++)
            if (!small_int(t->int32_data[i])) return false;
        if (t->has_raw_data)
            for (size_t i = 0; i + 4 <= t->raw_data.len; i += 4) {
                int32_t v;
                memcpy(&v, t->raw_data.data + i, 4);
                if (!small_int(v)) return false;
            }
    }
    return true;
}

static bool shapes_stay_small(const uint8_t *data, size_t size) {
    Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, size, data);
    if (!mp) return true; /* the loader rejects it: nothing to run */
    bool ok = true;
    const Onnx__GraphProto *g = mp->graph;
    for (size_t i = 0; g && ok && i < g->n_initializer; i++) ok = small_tensor(g->initializer[i]);
    for (size_t i = 0; g && ok && i < g->n_input; i++) {
        const Onnx__TypeProto *tp = g->input[i]->type;
        if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type ||
            !tp->tensor_type->shape)
            continue;
        int64_t n = 1;
        for (size_t d = 0; d < tp->tensor_type->shape->n_dim && ok; d++) {
            const Onnx__TensorShapeProto__Dimension *dim = tp->tensor_type->shape->dim[d];
            if (dim->value_case != ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) continue;
            if (dim->dim_value > (1 << 16)) ok = false;
            else if (dim->dim_value > 0) n *= dim->dim_value;
            if (n > (1 << 16)) ok = false;
        }
    }
    for (size_t i = 0; g && ok && i < g->n_node; i++)
        for (size_t a = 0; ok && a < g->node[i]->n_attribute; a++) {
            const Onnx__AttributeProto *ap = g->node[i]->attribute[a];
            if (ap->has_i && !small_int(ap->i)) ok = false;
            for (size_t k = 0; ok && k < ap->n_ints; k++) ok = small_int(ap->ints[k]);
            ok = ok && small_tensor(ap->t);
        }
    onnx__model_proto__free_unpacked(mp, NULL);
    return ok;
}

static void load_and_run(const uint8_t *data, size_t size, cs_precision prec) {
    cs_model_options opt = {.num_threads = 1, .precision = prec};
    cs_model *m = NULL;
    cs_error err;
    if (cs_model_load_buffer(data, size, &opt, &m, &err) != CS_OK) return;
    cs_model_info info;
    cs_model_get_info(m, &info);
    int64_t n = 1;
    for (int i = 1; i < 4; i++) n *= info.input_dims[i] > 0 ? info.input_dims[i] : 0;
    /* Run only small models: the point is robustness, not throughput. */
    if (n > 0 && n <= (1 << 16) && info.num_classes > 0 && info.num_classes <= (1 << 16)) {
        cs_session *s = NULL;
        float *x = calloc((size_t)n, sizeof(float));
        float *y = calloc((size_t)info.num_classes, sizeof(float));
        if (x && y && cs_session_create(m, &s, &err) == CS_OK) {
            for (int64_t i = 0; i < n; i++) x[i] = (float)(i % 7) * 0.25f - 0.5f;
            (void)cs_session_run(s, x, 1, y, &err);
            cs_session_free(s);
        }
        free(x);
        free(y);
    }
    cs_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!shapes_stay_small(data, size)) return 0;
    load_and_run(data, size, CS_PRECISION_FP32);
    if (cs_cpu_has_bf16()) load_and_run(data, size, CS_PRECISION_BF16);
    return 0;
}
