/* AVX2 integer-path kernel bodies, included twice by kernels_avx2.c: QV_VNNI 1 (AVX-VNNI's VEX vpdpbusd,
 * functions built for the avxvnni target) and QV_VNNI 0 (maddubs). QV(name) gives each copy its own names.
 *
 * The 16 reference lanes live in two registers: lo = lanes 0..7 (elements 0..31 of a 64-element chunk,
 * activation block 2k), hi = lanes 8..15 (block 2k+1). Both copies compute the exact int32 lane sums of
 * kernels.h, so both equal the scalar reference bit for bit. Each loaded weight chunk serves all nx tokens. */

/* p = exact sums of 4 products w * (u - 128); nc: -128 * sum(w) per lane (VNNI), aw: |w| (maddubs). */
QV_FN __m256i QV(dot4)(__m256i u, __m256i w, __m256i nc_or_aw) {
#if QV_VNNI
    return _mm256_dpbusd_avx_epi32(nc_or_aw, u, w);
#else
    /* sign(q, w) * |w| = q * w; |q| <= 127 and |w| <= 128 keep maddubs' int16 pairs from saturating */
    __m256i q = _mm256_xor_si256(u, _mm256_set1_epi8((char)0x80));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(nc_or_aw, _mm256_sign_epi8(q, w)), _mm256_set1_epi16(1));
#endif
}

QV_FN __m256i QV(prep)(__m256i w) {
#if QV_VNNI
    return _mm256_sub_epi32(_mm256_setzero_si256(),
                            _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), _mm256_set1_epi8((char)0x80), w));
#else
    return _mm256_abs_epi8(w);
#endif
}

/* Chunk k: w0 / w1 = levels of elements 0..31 / 32..63 with per-lane scales f0 / f1; two = 0: the half
 * chunk that ends a row with an odd number of 32-blocks (lanes 0..7 only, nothing past the row is read). */
QV_FN void QV(qchunk)(qacc *acc, __m256i w0, __m256i w1, __m256 f0, __m256 f1, const hkv_qx *x, int nx, int64_t k,
                      int two) {
    __m256i a0 = QV(prep)(w0), a1 = two ? QV(prep)(w1) : a0;
    for (int t = 0; t < nx; t++) {
        const uint8_t *u = x[t].u + 64 * k;
        __m256i p0 = QV(dot4)(_mm256_loadu_si256((const __m256i *)u), w0, a0);
        acc[t].lo = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_mul_ps(f0, _mm256_broadcast_ss(x[t].d + 2 * k)), acc[t].lo);
        if (!two) continue;
        __m256i p1 = QV(dot4)(_mm256_loadu_si256((const __m256i *)(u + 32)), w1, a1);
        acc[t].hi = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_mul_ps(f1, _mm256_broadcast_ss(x[t].d + 2 * k + 1)), acc[t].hi);
    }
}

/* Q8_0 / Q4_0 / Q5_0 blocks in pairs. */
QV_FN void QV(qdot_x0_n)(const uint8_t *row, size_t bsize, int type, const hkv_qx *x, int nx, float *out, int64_t n) {
    qacc acc[HKV_QX_MAX_TOK];
    for (int t = 0; t < nx; t++) acc[t].lo = acc[t].hi = _mm256_setzero_ps();
    int64_t nb = n / 32;
    for (int64_t k = 0; 2 * k < nb; k++) {
        int two = 2 * k + 1 < nb;
        const uint8_t *b0 = row + (size_t)(2 * k) * bsize, *b1 = two ? b0 + bsize : b0;
        __m256i w0 = lv32(b0, type), w1 = lv32(b1, type);
        /* d is the first field of every 32-block layout */
        __m256 f0 = _mm256_set1_ps(h2f(*(const uint16_t *)b0)), f1 = _mm256_set1_ps(h2f(*(const uint16_t *)b1));
        QV(qchunk)(acc, w0, w1, f0, f1, x, nx, k, two);
    }
    for (int t = 0; t < nx; t++) out[t] = hsum16(acc[t]);
}

QV_FN void QV(qdot_q8_0_n)(const void *row, const hkv_qx *x, int nx, float *out, int64_t n) {
    QV(qdot_x0_n)(row, sizeof(block_q8_0), HKV_TYPE_Q8_0, x, nx, out, n);
}

QV_FN void QV(qdot_q4_0_n)(const void *row, const hkv_qx *x, int nx, float *out, int64_t n) {
    QV(qdot_x0_n)(row, sizeof(block_q4_0), HKV_TYPE_Q4_0, x, nx, out, n);
}

QV_FN void QV(qdot_q5_0_n)(const void *row, const hkv_qx *x, int nx, float *out, int64_t n) {
    QV(qdot_x0_n)(row, sizeof(block_q5_0), HKV_TYPE_Q5_0, x, nx, out, n);
}

/* ---- K-quant types: the super-block format of kernels.h. A decoded super-block: w[2c + h] = the 32 unsigned
 * levels of chunk c, half h (lanes 8h..8h+7), sc[2c + h] = the int16 scale of each maddubs pair, coef = the 16
 * block-sum coefficients, d / dm = the float factors of isum / mi. */
typedef struct { __m256i w[8], sc[8], coef; float d, dm; } QV(ksb);

/* isum in int32 (maddubs pairs <= 2 * 63 * 127, times the int16 scale), then one cvt + fma per half and the
 * block-sum term on lanes 0..7 (kernels.h). */
QV_FN void QV(ksb_dot)(qacc *acc, const QV(ksb) *k, const hkv_qx *x, int nx, int64_t i) {
    for (int t = 0; t < nx; t++) {
        const int8_t *q = x[t].qk + QK_K * i;
        __m256i is[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        for (int j = 0; j < 8; j++) {
            __m256i p = _mm256_maddubs_epi16(k->w[j], _mm256_loadu_si256((const __m256i *)(q + 32 * j)));
#if QV_VNNI
            is[j & 1] = _mm256_dpwssd_avx_epi32(is[j & 1], p, k->sc[j]);
#else
            is[j & 1] = _mm256_add_epi32(is[j & 1], _mm256_madd_epi16(p, k->sc[j]));
#endif
        }
        float dk = x[t].dk[i];
        __m256 fd = _mm256_set1_ps(k->d * dk);
        __m256 mi = _mm256_cvtepi32_ps(_mm256_madd_epi16(k->coef, _mm256_loadu_si256((const __m256i *)(x[t].bk + 16 * i))));
        acc[t].lo = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is[0]), fd, acc[t].lo);
        acc[t].hi = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is[1]), fd, acc[t].hi);
        acc[t].lo = _mm256_fnmadd_ps(mi, _mm256_set1_ps(k->dm * dk), acc[t].lo);
    }
}

/* Q4_K (has_qh 0) / Q5_K: chunk c = low nibbles of qs[32c..32c+31] (sub-block 2c), then the high nibbles
 * (sub-block 2c+1). */
QV_FN void QV(k45_decode)(QV(ksb) *k, const uint8_t *blk, int has_qh) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    const block_q4_K *b4 = (const block_q4_K *)blk;
    const block_q5_K *b5 = (const block_q5_K *)blk;
    const uint8_t *qs = has_qh ? b5->qs : b4->qs;
    k->d = h2f(b4->d); /* d, dmin: same offsets in both layouts */
    k->dm = h2f(b4->dmin);
    int sc[8], m[8];
    for (int j = 0; j < 8; j++) k_scale_min(j, b4->scales, &sc[j], &m[j]);
    k->coef = _mm256_setr_epi16((short)m[0], (short)m[0], (short)m[1], (short)m[1], (short)m[2], (short)m[2], (short)m[3],
                                (short)m[3], (short)m[4], (short)m[4], (short)m[5], (short)m[5], (short)m[6], (short)m[6],
                                (short)m[7], (short)m[7]);
    __m256i vqh = has_qh ? _mm256_loadu_si256((const __m256i *)b5->qh) : _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
        __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        if (has_qh) {
            __m256i h0 = _mm256_and_si256(_mm256_srl_epi16(vqh, _mm_cvtsi32_si128(2 * c)), one);
            __m256i h1 = _mm256_and_si256(_mm256_srl_epi16(vqh, _mm_cvtsi32_si128(2 * c + 1)), one);
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(h0, 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(h1, 4));
        }
        k->w[2 * c] = lo;
        k->w[2 * c + 1] = hi;
        k->sc[2 * c] = _mm256_set1_epi16((short)sc[2 * c]);
        k->sc[2 * c + 1] = _mm256_set1_epi16((short)sc[2 * c + 1]);
    }
}

/* Q6_K chunk c (half h = c / 2, groups 2(c % 2), 2(c % 2) + 1); one int8 scale per 16 elements = 4 lanes. */
QV_FN void QV(q6k_decode)(QV(ksb) *k, const uint8_t *blk) {
    const block_q6_K *b = (const block_q6_K *)blk;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3);
    k->d = k->dm = h2f(b->d);
    k->coef = _mm256_slli_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales)), 5); /* 32 sc */
    for (int c = 0; c < 4; c++) {
        int h = c / 2, s = 4 * (c % 2);
        const uint8_t *ql = b->ql + 64 * h;
        __m128i sh = _mm_cvtsi32_si128(s), sh2 = _mm_cvtsi32_si128(s + 2);
        __m256i l0 = _mm256_and_si256(_mm256_srl_epi16(_mm256_loadu_si256((const __m256i *)ql), sh), m4);
        __m256i l1 = _mm256_and_si256(_mm256_srl_epi16(_mm256_loadu_si256((const __m256i *)(ql + 32)), sh), m4);
        __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
        __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, sh), m2), 4);
        __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, sh2), m2), 4);
        k->w[2 * c] = _mm256_or_si256(l0, h0);
        k->w[2 * c + 1] = _mm256_or_si256(l1, h1);
        const int8_t *g = b->scales + 4 * c;
        k->sc[2 * c] = _mm256_set_m128i(_mm_set1_epi16(g[1]), _mm_set1_epi16(g[0]));
        k->sc[2 * c + 1] = _mm256_set_m128i(_mm_set1_epi16(g[3]), _mm_set1_epi16(g[2]));
    }
}

/* kind: 0 Q4_K, 1 Q5_K, 2 Q6_K */
QV_FN void QV(qdot_k_n)(const uint8_t *row, int kind, const hkv_qx *x, int nx, float *out, int64_t n) {
    size_t bsize = kind == 0 ? sizeof(block_q4_K) : kind == 1 ? sizeof(block_q5_K) : sizeof(block_q6_K);
    qacc acc[HKV_QX_MAX_TOK];
    for (int t = 0; t < nx; t++) acc[t].lo = acc[t].hi = _mm256_setzero_ps();
    QV(ksb) k;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *blk = row + (size_t)i * bsize;
        if (kind == 2) QV(q6k_decode)(&k, blk);
        else QV(k45_decode)(&k, blk, kind);
        QV(ksb_dot)(acc, &k, x, nx, i);
    }
    for (int t = 0; t < nx; t++) out[t] = hsum16(acc[t]);
}

QV_FN void QV(qdot_q4_k_n)(const void *row, const hkv_qx *x, int nx, float *out, int64_t n) {
    QV(qdot_k_n)(row, 0, x, nx, out, n);
}

QV_FN void QV(qdot_q5_k_n)(const void *row, const hkv_qx *x, int nx, float *out, int64_t n) {
    QV(qdot_k_n)(row, 1, x, nx, out, n);
}

QV_FN void QV(qdot_q6_k_n)(const void *row, const hkv_qx *x, int nx, float *out, int64_t n) {
    QV(qdot_k_n)(row, 2, x, nx, out, n);
}

QDOT_ENTRY(q8_0)
QDOT_ENTRY(q4_0)
QDOT_ENTRY(q5_0)
QDOT_ENTRY(q4_k)
QDOT_ENTRY(q5_k)
QDOT_ENTRY(q6_k)
