/* camserve inspect: what a model is, and where Grad-CAM can look. */
#include "camserve/engine.h"
#include "cli/cli.h"
#include "cli/model_arg.h"

#include <jansson.h>
#include <stdio.h>

int cs_cli_inspect(int argc, char **argv) {
    cli_opt opts[] = {{"model", true}, {"json", false}, {"threads", true}, {"device", true},
                      {"precision", true}};
    int nopts = 5, rc = cli_parse("inspect", argc, argv, opts, nopts);
    if (rc) return rc;
    cs_error err = {0};
    cs_model *m;
    cs_model_options mo = {0};
    /* inspect stays on the CPU unless asked: it reads the graph, and a GPU
     * load would only add its checks */
    if (cli_device_options(opts[3].value ? opts[3].value : "cpu", opts[4].value, &mo, &err) != CS_OK ||
        cli_load_model(opts[0].value, &mo, &m, &err) != CS_OK) {
        cli_free(opts, nopts);
        return cli_fail("inspect", &err);
    }
    cs_model_info info;
    cs_model_get_info(m, &info);
    const char **names;
    const int *counts;
    int nh = cs_model_op_histogram(m, &names, &counts);
    int nl = cs_model_num_layers(m), def = cs_model_default_layer(m);

    if (opts[1].value) {
        json_t *o = json_object(), *in = json_array(), *hist = json_object(), *layers = json_array();
        for (int i = 0; i < 4; i++) json_array_append_new(in, json_integer(info.input_dims[i]));
        for (int i = 0; i < nh; i++) json_object_set_new(hist, names[i], json_integer(counts[i]));
        for (int i = 0; i < nl; i++) {
            int64_t d[4];
            cs_model_layer_dims(m, i, d);
            json_t *l = json_pack("{s:s, s:[I,I,I], s:b}", "name", cs_model_layer_name(m, i), "shape",
                                  (json_int_t)d[1], (json_int_t)d[2], (json_int_t)d[3], "default",
                                  i == def);
            json_array_append_new(layers, l);
        }
        json_object_set_new(o, "model", json_string(cli_model_display(opts[0].value)));
        json_object_set_new(o, "opset", json_integer(info.opset));
        json_object_set_new(o, "device", json_string(cs_model_device(m)));
        json_object_set_new(o, "precision", json_string(cs_precision_name(cs_model_precision(m))));
        json_object_set_new(o, "inputs",
                            json_pack("[{s:s, s:o}]", "name", info.input_name, "shape", in));
        json_object_set_new(o, "outputs", json_pack("[{s:s, s:[i,I]}]", "name", info.output_name,
                                                    "shape", -1, (json_int_t)info.num_classes));
        json_object_set_new(o, "num_classes", json_integer(info.num_classes));
        json_object_set_new(o, "params", json_integer(info.num_params));
        json_object_set_new(o, "flops", json_real(info.flops));
        json_object_set_new(o, "nodes", json_integer(info.num_nodes));
        json_object_set_new(o, "kernels", json_integer(info.num_kernels));
        json_object_set_new(o, "ops", hist);
        json_object_set_new(o, "layers", layers);
        json_object_set_new(o, "default_layer", def >= 0 ? json_string(cs_model_layer_name(m, def))
                                                         : json_null());
        json_dumpf(o, stdout, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
        json_decref(o);
    } else {
        printf("model:    %s (opset %d)\n", cli_model_display(opts[0].value), info.opset);
        printf("input:    %s [%s, %lld, %lld, %lld]\n", info.input_name,
               info.input_dims[0] < 0 ? "N" : "1", (long long)info.input_dims[1],
               (long long)info.input_dims[2], (long long)info.input_dims[3]);
        printf("output:   %s [N, %lld]\n", info.output_name, (long long)info.num_classes);
        printf("params:   %lld\n", (long long)info.num_params);
        printf("device:   %s (%s)\n", cs_model_device(m), cs_precision_name(cs_model_precision(m)));
        printf("flops:    %.3f G per image\n", info.flops * 1e-9);
        printf("nodes:    %d ONNX nodes -> %d kernels after folding and fusion\n", info.num_nodes,
               info.num_kernels);
        printf("ops:     ");
        for (int i = 0; i < nh; i++) printf(" %s x%d", names[i], counts[i]);
        printf("\nGrad-CAM layers (%d):\n", nl);
        for (int i = 0; i < nl; i++) {
            int64_t d[4];
            cs_model_layer_dims(m, i, d);
            printf("  %c %-48s %lldx%lldx%lld\n", i == def ? '*' : ' ', cs_model_layer_name(m, i),
                   (long long)d[1], (long long)d[2], (long long)d[3]);
        }
        if (def >= 0) printf("(* = default layer)\n");
    }
    cs_model_free(m);
    cli_free(opts, nopts);
    return 0;
}
