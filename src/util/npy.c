/* .npy reader/writer.  The header is a Python dict literal; we accept only
 * what numpy.save writes for float32 C-order arrays and reject the rest with
 * a message that says what was found. */
#include "camserve/npy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char NPY_MAGIC[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

int64_t cs_npy_count(const cs_npy *npy) {
    int64_t n = 1;
    for (int i = 0; i < npy->ndim; i++) n *= npy->dims[i];
    return n;
}

void cs_npy_free(cs_npy *npy) {
    if (!npy) return;
    free(npy->data);
    npy->data = NULL;
    npy->ndim = 0;
}

/* Finds the value text after 'key': in the header dict. */
static const char *dict_value(const char *hdr, const char *key) {
    const char *p = strstr(hdr, key);
    if (!p) return NULL;
    p = strchr(p + strlen(key), ':');
    if (!p) return NULL;
    p++;
    while (*p == ' ') p++;
    return p;
}

cs_status cs_npy_parse(const void *buf, size_t len, cs_npy *out, cs_error *err) {
    const unsigned char *b = buf;
    memset(out, 0, sizeof *out);
    if (len < 10 || memcmp(b, NPY_MAGIC, 6) != 0)
        return cs_errorf(err, CS_EFORMAT, "not a .npy file (bad magic)");
    size_t hlen, hoff;
    if (b[6] == 1) {
        hlen = (size_t)b[8] | ((size_t)b[9] << 8);
        hoff = 10;
    } else if (b[6] == 2 || b[6] == 3) {
        if (len < 12) return cs_errorf(err, CS_EFORMAT, "truncated .npy header");
        hlen = (size_t)b[8] | ((size_t)b[9] << 8) | ((size_t)b[10] << 16) | ((size_t)b[11] << 24);
        hoff = 12;
    } else {
        return cs_errorf(err, CS_EFORMAT, ".npy version %d not supported", b[6]);
    }
    if (hlen > 65536 || hoff + hlen > len)
        return cs_errorf(err, CS_EFORMAT, "truncated .npy header");
    char hdr[65537];
    memcpy(hdr, b + hoff, hlen);
    hdr[hlen] = '\0';

    const char *descr = dict_value(hdr, "'descr'");
    if (!descr || (strncmp(descr, "'<f4'", 5) != 0 && strncmp(descr, "'float32'", 9) != 0))
        return cs_errorf(err, CS_EUNSUPPORTED, ".npy dtype must be little-endian float32 ('<f4')");
    const char *fo = dict_value(hdr, "'fortran_order'");
    if (!fo || strncmp(fo, "False", 5) != 0)
        return cs_errorf(err, CS_EUNSUPPORTED, ".npy must be C order (fortran_order False)");
    const char *sh = dict_value(hdr, "'shape'");
    if (!sh || *sh != '(') return cs_errorf(err, CS_EFORMAT, ".npy header has no shape");
    sh++;
    int nd = 0;
    int64_t count = 1;
    for (;;) {
        while (*sh == ' ' || *sh == ',') sh++;
        if (*sh == ')') break;
        if (*sh < '0' || *sh > '9') return cs_errorf(err, CS_EFORMAT, ".npy shape is malformed");
        if (nd == CS_NPY_MAX_DIMS)
            return cs_errorf(err, CS_EUNSUPPORTED, ".npy has more than %d dims", CS_NPY_MAX_DIMS);
        char *end;
        long long d = strtoll(sh, &end, 10);
        if (d < 0 || d > (1LL << 31)) return cs_errorf(err, CS_EFORMAT, ".npy dim out of range");
        out->dims[nd++] = d;
        if (d && count > (1LL << 40) / d) return cs_errorf(err, CS_ELIMIT, ".npy array too large");
        count *= d;
        sh = end;
    }
    out->ndim = nd;
    size_t data_off = hoff + hlen, need = (size_t)count * 4;
    if (len - data_off < need)
        return cs_errorf(err, CS_EFORMAT, ".npy data truncated: %zu bytes, shape needs %zu",
                         len - data_off, need);
    out->data = malloc(need ? need : 4);
    if (!out->data) return cs_errorf(err, CS_ENOMEM, "out of memory reading .npy");
    memcpy(out->data, b + data_off, need);
    return CS_OK;
}

cs_status cs_npy_load(const char *path, cs_npy *out, cs_error *err) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return cs_errorf(err, CS_EIO, "cannot open %s", path);
    cs_status st = CS_OK;
    unsigned char *buf = NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        st = cs_errorf(err, CS_EIO, "cannot read %s", path);
        goto done;
    }
    long len = ftell(f);
    rewind(f);
    if (len < 0) {
        st = cs_errorf(err, CS_EIO, "cannot read %s", path);
        goto done;
    }
    buf = malloc((size_t)len + 1);
    if (!buf) {
        st = cs_errorf(err, CS_ENOMEM, "out of memory reading %s", path);
        goto done;
    }
    if (fread(buf, 1, (size_t)len, f) != (size_t)len) {
        st = cs_errorf(err, CS_EIO, "short read on %s", path);
        goto done;
    }
    st = cs_npy_parse(buf, (size_t)len, out, err);
    if (st != CS_OK) cs_error_prefix(err, "%s", path);
done:
    free(buf);
    fclose(f);
    return st;
}

cs_status cs_npy_save(const char *path, const float *data, int ndim, const int64_t *dims,
                      cs_error *err) {
    char shape[256] = "", hdr[512];
    size_t off = 0;
    int64_t count = 1;
    for (int i = 0; i < ndim; i++) {
        off += (size_t)snprintf(shape + off, sizeof shape - off, "%lld,%s", (long long)dims[i],
                                (i + 1 < ndim) ? " " : "");
        count *= dims[i];
        if (off >= sizeof shape) return cs_errorf(err, CS_EINVAL, "shape too long");
    }
    /* numpy writes "(n,)" for 1-D and "(a, b)" otherwise. */
    if (ndim > 1 && off > 0 && shape[off - 1] == ',') shape[--off] = '\0';
    int n = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }",
                     shape);
    /* Pad with spaces so that magic + header is a multiple of 64, ending in \n. */
    size_t total = 10 + (size_t)n + 1;
    size_t pad = (64 - total % 64) % 64;
    memset(hdr + n, ' ', pad);
    hdr[n + pad] = '\n';
    size_t hlen = (size_t)n + pad + 1;
    FILE *f = fopen(path, "wb");
    if (!f) return cs_errorf(err, CS_EIO, "cannot create %s", path);
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                             (unsigned char)(hlen & 0xff), (unsigned char)(hlen >> 8)};
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(hdr, 1, hlen, f) == hlen &&
             fwrite(data, 4, (size_t)count, f) == (size_t)count;
    if (fclose(f) != 0) ok = 0;
    if (!ok) return cs_errorf(err, CS_EIO, "write failed on %s", path);
    return CS_OK;
}
