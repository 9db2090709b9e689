/* ONNX protobuf → cs_graph.  Internal to the engine.
 *
 * The loader only translates: it checks that the file is a well-formed ONNX
 * model we can represent (default-domain ops we know, dense tensors of
 * supported types, a topologically sorted graph) and leaves every semantic
 * check to shape inference.  On failure the graph is left empty. */
#ifndef CS_ONNX_LOAD_H
#define CS_ONNX_LOAD_H

#include "engine/ir.h"

/* Parses buf (an ONNX ModelProto) into *g, which the caller zero-initialises
 * and later releases with cs_graph_free. */
cs_status cs_onnx_parse(const void *buf, size_t len, cs_graph *g, cs_error *err);
void cs_graph_free(cs_graph *g);

#endif
