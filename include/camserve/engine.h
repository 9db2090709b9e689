/* camserve engine: load an ONNX CNN once, run it from many sessions.
 *
 * A cs_model is immutable after cs_model_load returns: the graph, the folded
 * and prepacked weights, the candidate Grad-CAM layers.  Any number of
 * threads may share one model.  A cs_session belongs to one thread at a
 * time; it owns the activation arena and the kernel primitives for each
 * batch size it has run (a plan per batch size, built on first use).
 *
 * Tensors at this API are dense float32 in C order, NCHW for images, on the
 * host, whatever device computes them (cs_model_options.device). */
#ifndef CAMSERVE_ENGINE_H
#define CAMSERVE_ENGINE_H

#include "camserve/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cs_model cs_model;
typedef struct cs_session cs_session;

typedef struct cs_model_info {
    const char *input_name;
    int64_t input_dims[4];  /* N,C,H,W; N = -1 when the batch is dynamic */
    const char *output_name;
    int64_t num_classes;
    int64_t num_params;     /* float weights in the ONNX file */
    double flops;           /* multiply-adds x2 per image, after folding */
    int opset;
    int num_nodes;          /* ONNX nodes as loaded */
    int num_kernels;        /* ops left after folding and fusion */
} cs_model_info;

/* Precision of a model on its device.  On a GPU, fp16/bf16 are autocast
 * semantics: weights and activations stored in half, convolutions and
 * matrix products accumulate in fp32, softmax/normalisation/reductions and
 * the CAM maths run in fp32.  The CPU computes in fp32, or in bf16 where it
 * has native bf16 dot products (cs_cpu_has_bf16): there only convolutions
 * change, reading their input and weights rounded to bf16 and accumulating
 * and writing fp32; every other op and the backward of an explanation stay
 * fp32.  fp16 is GPU-only. */
typedef enum cs_precision {
    CS_PRECISION_DEFAULT = 0, /* fp16 on cuda, fp32 on cpu */
    CS_PRECISION_FP32,
    CS_PRECISION_FP16,
    CS_PRECISION_BF16
} cs_precision;

/* Whether this CPU has native bf16 dot products (AVX512_BF16 or AMX), the
 * condition for --device cpu --precision bf16. */
int cs_cpu_has_bf16(void);
/* One line on the CPU engine for `camserve version`: oneDNN's version, the
 * instruction set it runs on, and whether bf16 is native. */
void cs_cpu_describe(char *buf, size_t len);

/* "fp32" / "fp16" / "bf16" (and "default") */
const char *cs_precision_name(cs_precision p);
cs_status cs_precision_parse(const char *s, cs_precision *out, cs_error *err);

typedef struct cs_model_options {
    int num_threads; /* 0: all cores */
    /* A directory for the prepared-model cache (cs_model_load only): the
     * folded graph and the weights packed for this CPU are written there
     * once and mapped back on later loads, which skips parsing, folding and
     * packing.  Entries are checksummed; a stale or corrupt one is rebuilt.
     * NULL: no cache. */
    const char *prepared_dir;
    /* Compute the SHA-256 of the ONNX bytes (cs_model_digest); always done
     * when prepared_dir is set. */
    int compute_digest;
    /* "cpu", "cuda" (= "cuda:0"), "cuda:N" or "auto" (cuda:0 when camserve
     * was built with CUDA and a GPU is usable, else cpu).  NULL = "cpu".
     * A model on a GPU is still parsed and folded by the CPU loader; its
     * weights are then uploaded once to that device and shared by all of
     * its sessions.  An op the GPU backend lacks fails the load with a
     * message naming it. */
    const char *device;
    cs_precision precision;
} cs_model_options;

cs_status cs_model_load(const char *path, const cs_model_options *opt, cs_model **out,
                        cs_error *err);
cs_status cs_model_load_buffer(const void *buf, size_t len, const cs_model_options *opt,
                               cs_model **out, cs_error *err);
void cs_model_free(cs_model *m);

void cs_model_get_info(const cs_model *m, cs_model_info *out);

/* ONNX metadata_props value for key, or NULL.  Preprocessing config and
 * labels may be carried this way (see imageio.h). */
const char *cs_model_metadata(const cs_model *m, const char *key);
/* Path the model was loaded from ("" for a buffer). */
const char *cs_model_path(const cs_model *m);
/* SHA-256 of the ONNX bytes; 0 when it was not computed (see
 * cs_model_options.compute_digest), 1 otherwise. */
int cs_model_digest(const cs_model *m, uint8_t out[32]);
/* Whether the model came from the prepared-model cache. */
int cs_model_from_cache(const cs_model *m);
/* The device the model computes on ("cpu", "cuda:0", ...) and its precision
 * (never CS_PRECISION_DEFAULT); the strings live as long as the model. */
const char *cs_model_device(const cs_model *m);
cs_precision cs_model_precision(const cs_model *m);

/* Histogram of ONNX op types as loaded: returns the count of distinct types;
 * names[i] / counts[i] for i < return value. */
int cs_model_op_histogram(const cs_model *m, const char ***names, const int **counts);

/* Candidate Grad-CAM layers: non-constant 4-D tensors with spatial size > 1,
 * in execution order.  The default is the last one before global pooling /
 * flatten. */
int cs_model_num_layers(const cs_model *m);
const char *cs_model_layer_name(const cs_model *m, int i);
void cs_model_layer_dims(const cs_model *m, int i, int64_t dims[4]); /* batch 1 */
int cs_model_default_layer(const cs_model *m);
int cs_model_find_layer(const cs_model *m, const char *name); /* -1 if not a candidate */

cs_status cs_session_create(const cs_model *m, cs_session **out, cs_error *err);
void cs_session_free(cs_session *s);

/* Forward pass: input is batch x C x H x W, logits batch x num_classes. */
cs_status cs_session_run(cs_session *s, const float *input, int batch, float *logits,
                         cs_error *err);
/* cs_session_run for any number n >= 1 of inputs: a model exported with a
 * fixed batch B runs B at a time, the last run padded with copies of the
 * last input (their logits dropped); one with a dynamic batch runs all n at
 * once. */
cs_status cs_session_run_padded(cs_session *s, const float *input, int n, float *logits, cs_error *err);

/* ---- explanations ----
 * cs_session_forward_keep runs the forward pass keeping the activations of
 * the given layers (indices as in cs_model_layer_name) and whatever the
 * backward needs; cs_session_backward then computes the gradient of
 * sum_i logits[i, classes[i]] (raw logits, as pytorch-grad-cam's
 * ClassifierOutputTarget) with respect to those layers only: input
 * gradients, no weight gradients, no op below the layers. */
cs_status cs_session_forward_keep(cs_session *s, const float *input, int batch, const int *layers,
                                  int nlayers, float *logits, cs_error *err);
cs_status cs_session_backward(cs_session *s, const int *classes, cs_error *err);
/* Forward pass in which the given layer's values (batch x C x H x W, dense)
 * replace what the network computed there, before anything reads them:
 * the "from the layer onward" pass AblationCAM needs. */
cs_status cs_session_run_with_layer(cs_session *s, const float *input, int batch, int layer,
                                    const float *layer_values, float *logits, cs_error *err);
/* The same for any number n >= 1, padded as cs_session_run_padded pads
 * (inputs and layer values alike). */
cs_status cs_session_run_with_layer_padded(cs_session *s, const float *input, int n, int layer,
                                           const float *layer_values, float *logits, cs_error *err);
/* Activation and gradient (NULL before cs_session_backward) of a layer kept
 * by the last cs_session_forward_keep: dense batch x C x H x W, owned by the
 * session and valid until its next call. */
cs_status cs_session_layer(cs_session *s, int layer, const float **act, const float **grad,
                           int64_t dims[4], cs_error *err);
/* The raw Grad-CAM map of a layer after cs_session_backward:
 * relu(sum_c mean_hw(grad[n,c]) * act[n,c,h,w]), batch x H x W, fp32,
 * computed on the device, owned by the session and valid until its next
 * call.  CS_EUNSUPPORTED on the CPU backend, whose callers compute it from
 * cs_session_layer (src/cam). */
cs_status cs_session_gradcam(cs_session *s, int layer, const float **map, int64_t dims[3],
                             cs_error *err);

/* For benchmarks: the device time of the session's last forward pass
 * (cs_session_run, _run_with_layer, _forward_keep) in ms, from its input
 * on the device to its logits in host memory, measured with CUDA events:
 * the host's staging copy and the input's transfer are not in it.  -1 on
 * the CPU backend, before any run, or when it could not be measured. */
double cs_session_device_ms(const cs_session *s);

#ifdef __cplusplus
}
#endif
#endif
