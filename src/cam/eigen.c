/* get_2d_projection (pytorch-grad-cam utils/svd_on_activations.py), the core
 * of EigenCAM, EigenGradCAM and eigen_smooth:
 *
 *   A = activations reshaped to (h*w, c), NaN -> 0, minus the column means
 *   p = A @ VT[0]  (VT[0]: first right singular vector of A)
 *
 * The SVD is replaced by the top eigenvector of a Gram matrix, built on the
 * smaller side so that ResNet-50's layer4 (49 x 2048) costs a 49 x 49 matrix:
 *   h*w <= c: G = A A^T (hw x hw), u its top eigenvector, v = A^T u / |A^T u|
 *   c < h*w:  G = A^T A (c x c),   v its top eigenvector
 * and p = A v.  The top eigenpair comes from Lanczos with full
 * reorthogonalisation and explicit restarts, in double, stopped when the
 * residual |G y - theta y| <= 1e-12 theta, which gives the singular vector to
 * ~1e-6 or better unless the top two singular values nearly coincide (where
 * LAPACK's vector is equally ill-defined).
 *
 * Sign: LAPACK returns VT[0] with an arbitrary sign, so pytorch-grad-cam's
 * map can come out inverted.  The sum of p is always zero (A is centred), so
 * it cannot fix the sign; instead p is oriented to correlate positively with
 * s = sum over channels of the uncentred activations (the plain channel-sum
 * CAM): sum_r p[r] s[r] > 0.  When that correlation is negligible
 * (|.| <= 1e-6 |p| |s - mean s|) the largest-magnitude element of p (first
 * index on ties) is made positive.  tools/cam_reference.py uses this rule. */
#include "cam_internal.h"

#include <math.h>
#include <string.h>

size_t cam_project_bytes(int c, int hw) {
    size_t m = (size_t)(hw <= c ? hw : c);
    size_t k = CS_CAM_LANCZOS_K;
    return cam_round(m * m * sizeof(double))              /* Gram */
           + cam_round((k + 1) * m * sizeof(double))      /* Lanczos basis */
           + cam_round(k * sizeof(double)) + cam_round(4 * k * sizeof(double)) /* T's solver */
           + 2 * cam_round(m * sizeof(double))            /* y, Gy */
           + cam_round((size_t)c * sizeof(double))        /* v */
           + cam_round((size_t)hw * sizeof(double)) * 2;  /* p, s */
}

/* Largest eigenvalue of the unreduced symmetric tridiagonal (al, be) of
 * order k, by bisection on Sturm counts: O(k) per step, ~60 steps, where a
 * dense solver would cost O(k^3). */
static int count_below(const double *al, const double *be, int k, double x) {
    int cnt = 0;
    double q = 1;
    for (int i = 0; i < k; i++) {
        q = al[i] - x - (i ? be[i - 1] * be[i - 1] / q : 0);
        if (q == 0) q = -1e-300; /* a zero pivot counts on the negative side */
        if (q < 0) cnt++;
    }
    return cnt;
}

static double tri_top_eigenvalue(const double *al, const double *be, int k) {
    double lo = al[0], hi = al[0];
    for (int i = 0; i < k; i++) { /* Gershgorin interval */
        double r = (i ? fabs(be[i - 1]) : 0) + (i + 1 < k ? fabs(be[i]) : 0);
        lo = al[i] - r < lo ? al[i] - r : lo;
        hi = al[i] + r > hi ? al[i] + r : hi;
    }
    for (int it = 0; it < 200; it++) {
        double mid = 0.5 * (lo + hi);
        if (mid <= lo || mid >= hi) break; /* interval is down to adjacent doubles */
        if (count_below(al, be, k, mid) >= k) hi = mid;
        else lo = mid;
    }
    return hi;
}

/* Eigenvector of the tridiagonal for eigenvalue theta by inverse iteration:
 * (T - theta I) z = y solved by Gaussian elimination with partial pivoting
 * (LAPACK dgtsv's scheme), twice.  d, du, du2, dl are k-long scratch. */
static void tri_eigenvector(const double *al, const double *be, int k, double theta, double *z,
                            double *d, double *du, double *du2, double *dl) {
    const double tiny = 1e-300 + 1e-15 * (fabs(theta) + 1e-300);
    for (int i = 0; i < k; i++) z[i] = 1;
    if (k == 1) return;
    for (int iter = 0; iter < 3; iter++) {
        for (int i = 0; i < k; i++) {
            d[i] = al[i] - theta;
            du[i] = i + 1 < k ? be[i] : 0;
            dl[i] = i + 1 < k ? be[i] : 0;
            du2[i] = 0;
        }
        for (int i = 0; i + 1 < k; i++) {
            if (fabs(d[i]) >= fabs(dl[i])) {
                if (d[i] == 0) d[i] = tiny;
                double f = dl[i] / d[i];
                d[i + 1] -= f * du[i];
                z[i + 1] -= f * z[i];
            } else { /* swap rows i and i+1, then eliminate */
                double f = d[i] / dl[i];
                d[i] = dl[i];
                double t = d[i + 1];
                d[i + 1] = du[i] - f * t;
                if (i + 2 < k) {
                    du2[i] = du[i + 1];
                    du[i + 1] = -f * du2[i];
                }
                du[i] = t;
                double zt = z[i];
                z[i] = z[i + 1];
                z[i + 1] = zt - f * z[i + 1];
            }
        }
        if (d[k - 1] == 0) d[k - 1] = tiny;
        z[k - 1] /= d[k - 1];
        z[k - 2] = (z[k - 2] - du[k - 2] * z[k - 1]) / d[k - 2];
        for (int i = k - 3; i >= 0; i--) z[i] = (z[i] - du[i] * z[i + 1] - du2[i] * z[i + 2]) / d[i];
        double nrm = 0;
        for (int i = 0; i < k; i++) nrm += z[i] * z[i];
        nrm = sqrt(nrm);
        for (int i = 0; i < k; i++) z[i] /= nrm;
    }
}

static double dot(const double *x, const double *y, int m) {
    double s = 0;
    for (int i = 0; i < m; i++) s += x[i] * y[i];
    return s;
}

static void symv(const double *g, const double *x, double *y, int m) {
    for (int i = 0; i < m; i++) y[i] = dot(g + (size_t)i * m, x, m);
}

/* Top eigenvector of the symmetric PSD m x m matrix g into y (unit norm). */
static void top_eigvec(const double *g, int m, double *y, cam_arena *ar) {
    const int kmax = m < CS_CAM_LANCZOS_K ? m : CS_CAM_LANCZOS_K;
    double *q = cam_arena_take(ar, (size_t)(CS_CAM_LANCZOS_K + 1) * m * sizeof(double));
    double *t = cam_arena_take(ar, (size_t)CS_CAM_LANCZOS_K * sizeof(double));
    double *tv = cam_arena_take(ar, (size_t)4 * CS_CAM_LANCZOS_K * sizeof(double));
    double *gy = cam_arena_take(ar, (size_t)m * sizeof(double));
    double alpha[CS_CAM_LANCZOS_K], beta[CS_CAM_LANCZOS_K];

    /* Deterministic start: the column with the largest diagonal (rich in the
     * top eigenvector) plus a small pseudo-random part, so that no
     * structured vector (e.g. all ones, which is in A A^T's null space after
     * centring) can be orthogonal to the answer. */
    int jmax = 0;
    for (int i = 1; i < m; i++)
        if (g[(size_t)i * m + i] > g[(size_t)jmax * m + jmax]) jmax = i;
    double scale = sqrt(fabs(g[(size_t)jmax * m + jmax])) * 1e-3 + 1e-300;
    uint32_t rng = 0x9E3779B9u;
    for (int i = 0; i < m; i++) {
        rng = rng * 1664525u + 1013904223u;
        y[i] = g[(size_t)i * m + jmax] + scale * ((double)(rng >> 8) / 16777216.0 - 0.5);
    }

    /* 50 cycles of 64 steps converge unless the top two eigenvalues nearly
     * coincide, where the vector is ill-defined anyway (and so is LAPACK's);
     * the last Ritz vector is then kept. */
    for (int restart = 0; restart < 50; restart++) {
        double nrm = sqrt(dot(y, y, m));
        if (!(nrm > 0)) { /* only for a zero start: any unit vector will do */
            memset(y, 0, (size_t)m * sizeof(double));
            y[0] = 1;
            return;
        }
        for (int i = 0; i < m; i++) q[i] = y[i] / nrm;
        int k = kmax, invariant = 0;
        for (int j = 0; j < kmax; j++) {
            double *qj = q + (size_t)j * m, *w = q + (size_t)(j + 1) * m;
            symv(g, qj, w, m);
            alpha[j] = dot(qj, w, m);
            /* Full reorthogonalisation, twice ("twice is enough"), replaces
             * the three-term recurrence and keeps the basis orthonormal. */
            for (int pass = 0; pass < 2; pass++)
                for (int i = 0; i <= j; i++) {
                    const double *qi = q + (size_t)i * m;
                    double h = dot(qi, w, m);
                    for (int r = 0; r < m; r++) w[r] -= h * qi[r];
                }
            beta[j] = sqrt(dot(w, w, m));
            if (j + 1 == kmax) break;
            if (beta[j] <= 1e-13 * (fabs(alpha[j]) + (j ? beta[j - 1] : 0)) || beta[j] == 0) {
                k = j + 1; /* Krylov space is invariant: its Ritz pairs are exact */
                invariant = 1;
                break;
            }
            for (int r = 0; r < m; r++) w[r] /= beta[j];
        }
        double theta = tri_top_eigenvalue(alpha, beta, k);
        tri_eigenvector(alpha, beta, k, theta, t, tv, tv + k, tv + 2 * k, tv + 3 * k);
        memset(y, 0, (size_t)m * sizeof(double));
        for (int j = 0; j < k; j++) {
            double s = t[j];
            const double *qj = q + (size_t)j * m;
            for (int r = 0; r < m; r++) y[r] += s * qj[r];
        }
        nrm = sqrt(dot(y, y, m));
        for (int r = 0; r < m; r++) y[r] /= nrm;
        if (invariant || k == m) return;
        symv(g, y, gy, m);
        double res = 0;
        for (int r = 0; r < m; r++) res += (gy[r] - theta * y[r]) * (gy[r] - theta * y[r]);
        if (sqrt(res) <= 1e-12 * fabs(theta) || theta == 0) return;
    }
}

void cam_project_2d(float *x, int c, int hw, float *pout, cam_arena *a) {
    /* Centre each channel over the spatial positions (A's column means). */
    for (int ci = 0; ci < c; ci++) {
        float *row = x + (size_t)ci * hw;
        double mean = 0;
        for (int r = 0; r < hw; r++) {
            if (row[r] != row[r]) row[r] = 0; /* get_2d_projection: NaN -> 0 */
            mean += row[r];
        }
        float fm = (float)(mean / hw);
        for (int r = 0; r < hw; r++) row[r] -= fm;
    }
    const int small_hw = hw <= c;
    const int m = small_hw ? hw : c;
    size_t mark = a->used;
    double *g = cam_arena_take(a, (size_t)m * m * sizeof(double));
    double *y = cam_arena_take(a, (size_t)m * sizeof(double));
    double *v = cam_arena_take(a, (size_t)c * sizeof(double));
    double *p = cam_arena_take(a, (size_t)hw * sizeof(double));
    double *s = cam_arena_take(a, (size_t)hw * sizeof(double));

    memset(g, 0, (size_t)m * m * sizeof(double));
    if (small_hw) {
        /* A A^T as a sum of rank-one updates, one per channel row: contiguous. */
        int ci = 0;
        for (; ci + 4 <= c; ci += 4) { /* four channels per pass over G */
            const float *r0 = x + (size_t)ci * hw, *r1 = r0 + hw, *r2 = r1 + hw, *r3 = r2 + hw;
            for (int r = 0; r < hw; r++) {
                const double x0 = r0[r], x1 = r1[r], x2 = r2[r], x3 = r3[r];
                double *gr = g + (size_t)r * hw;
                for (int q = r; q < hw; q++)
                    gr[q] += (x0 * r0[q] + x1 * r1[q]) + (x2 * r2[q] + x3 * r3[q]);
            }
        }
        for (; ci < c; ci++) {
            const float *row = x + (size_t)ci * hw;
            for (int r = 0; r < hw; r++) {
                double xr = row[r];
                double *gr = g + (size_t)r * hw;
                for (int q = r; q < hw; q++) gr[q] += xr * row[q];
            }
        }
    } else {
        /* Row i against four rows j at a time: row i is read once per four
         * dot products and the four sums run in parallel. */
        for (int i = 0; i < c; i++) {
            const float *ri = x + (size_t)i * hw;
            int j = i;
            for (; j + 4 <= c; j += 4) {
                const float *r0 = x + (size_t)j * hw, *r1 = r0 + hw, *r2 = r1 + hw, *r3 = r2 + hw;
                double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                for (int r = 0; r < hw; r++) {
                    const double xi = ri[r];
                    s0 += xi * r0[r];
                    s1 += xi * r1[r];
                    s2 += xi * r2[r];
                    s3 += xi * r3[r];
                }
                double *gi = g + (size_t)i * m + j;
                gi[0] = s0;
                gi[1] = s1;
                gi[2] = s2;
                gi[3] = s3;
            }
            for (; j < c; j++) {
                const float *rj = x + (size_t)j * hw;
                double acc = 0;
                for (int r = 0; r < hw; r++) acc += (double)ri[r] * rj[r];
                g[(size_t)i * m + j] = acc;
            }
        }
    }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < i; j++) g[(size_t)i * m + j] = g[(size_t)j * m + i];

    top_eigvec(g, m, y, a);
    if (small_hw) { /* v = A^T u, normalised */
        double nrm = 0;
        for (int ci = 0; ci < c; ci++) {
            const float *row = x + (size_t)ci * hw;
            double acc = 0;
            for (int r = 0; r < hw; r++) acc += row[r] * y[r];
            v[ci] = acc;
            nrm += acc * acc;
        }
        nrm = sqrt(nrm);
        for (int ci = 0; ci < c; ci++) v[ci] = nrm > 0 ? v[ci] / nrm : 0;
    } else {
        memcpy(v, y, (size_t)c * sizeof(double));
    }
    /* p = A v, and s = the channel sums for the sign rule.  s is summed
     * from the centred data, which shifts it by a constant; the rule
     * correlates p with s - mean(s), which that shift does not change. */
    memset(p, 0, (size_t)hw * sizeof(double));
    memset(s, 0, (size_t)hw * sizeof(double));
    for (int ci = 0; ci < c; ci++) {
        const float *row = x + (size_t)ci * hw;
        double vc = v[ci];
        for (int r = 0; r < hw; r++) {
            p[r] += vc * row[r];
            s[r] += row[r];
        }
    }
    double smean = 0, corr = 0, pn = 0, sn = 0;
    for (int r = 0; r < hw; r++) smean += s[r];
    smean /= hw;
    for (int r = 0; r < hw; r++) {
        double sc = s[r] - smean;
        corr += p[r] * sc;
        pn += p[r] * p[r];
        sn += sc * sc;
    }
    double sign;
    if (fabs(corr) > 1e-6 * sqrt(pn) * sqrt(sn)) {
        sign = corr > 0 ? 1 : -1;
    } else {
        int imax = 0;
        for (int r = 1; r < hw; r++)
            if (fabs(p[r]) > fabs(p[imax])) imax = r;
        sign = p[imax] < 0 ? -1 : 1;
    }
    for (int r = 0; r < hw; r++) pout[r] = (float)(sign * p[r]);
    a->used = mark;
}
