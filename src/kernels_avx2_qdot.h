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

/* Q4_K (has_qh 0) / Q5_K super-blocks: chunk c = low nibbles of qs[32c..32c+31] (group 2c), then the high
 * nibbles (group 2c+1). */
QV_FN void QV(qdot_k45_n)(const uint8_t *blocks, size_t bsize, int has_qh, const hkv_qx *x, int nx, float *out,
                          int64_t n) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    qacc acc[HKV_QX_MAX_TOK];
    __m256 macc[HKV_QX_MAX_TOK];
    for (int t = 0; t < nx; t++) acc[t].lo = acc[t].hi = macc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        const block_q4_K *b4 = (const block_q4_K *)(blocks + (size_t)i * bsize);
        const block_q5_K *b5 = (const block_q5_K *)b4;
        const uint8_t *qs = has_qh ? b5->qs : b4->qs;
        float d = h2f(b4->d), dmin = h2f(b4->dmin);  /* same offsets in both layouts */
        int sc[8], m[8];
        for (int j = 0; j < 8; j++) k_scale_min(j, b4->scales, &sc[j], &m[j]);
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
            QV(qchunk)(acc, lo, hi, _mm256_set1_ps(d * (float)sc[2 * c]), _mm256_set1_ps(d * (float)sc[2 * c + 1]), x,
                       nx, 4 * i + c, 1);
        }
        __m256 mf = _mm256_mul_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)m)));
        for (int t = 0; t < nx; t++) macc[t] = _mm256_fmadd_ps(mf, _mm256_loadu_ps(x[t].s + 8 * i), macc[t]);
    }
    for (int t = 0; t < nx; t++) out[t] = hsum16(acc[t]) - hsum8(macc[t]);
}

QV_FN void QV(qdot_q4_k_n)(const void *row, const hkv_qx *x, int nx, float *out, int64_t n) {
    QV(qdot_k45_n)(row, sizeof(block_q4_K), 0, x, nx, out, n);
}

QV_FN void QV(qdot_q5_k_n)(const void *row, const hkv_qx *x, int nx, float *out, int64_t n) {
    QV(qdot_k45_n)(row, sizeof(block_q5_K), 1, x, nx, out, n);
}

/* Q6_K chunk c (half h = c / 2, groups 2(c % 2), 2(c % 2) + 1); one int8 scale per 16 elements = 4 lanes. */
QV_FN void QV(qdot_q6_k_n)(const void *row, const hkv_qx *x, int nx, float *out, int64_t n) {
    const block_q6_K *b = row;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3), c32 = _mm256_set1_epi8(32);
    const __m256i i01 = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), i23 = _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3);
    qacc acc[HKV_QX_MAX_TOK];
    for (int t = 0; t < nx; t++) acc[t].lo = acc[t].hi = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m256 d = _mm256_set1_ps(h2f(b[i].d));
        for (int c = 0; c < 4; c++) {
            int h = c / 2, s = 4 * (c % 2);
            const uint8_t *ql = b[i].ql + 64 * h;
            __m128i sh = _mm_cvtsi32_si128(s), sh2 = _mm_cvtsi32_si128(s + 2);
            __m256i l0 = _mm256_and_si256(_mm256_srl_epi16(_mm256_loadu_si256((const __m256i *)ql), sh), m4);
            __m256i l1 = _mm256_and_si256(_mm256_srl_epi16(_mm256_loadu_si256((const __m256i *)(ql + 32)), sh), m4);
            __m256i qh = _mm256_loadu_si256((const __m256i *)(b[i].qh + 32 * h));
            __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, sh), m2), 4);
            __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, sh2), m2), 4);
            int32_t s4;
            memcpy(&s4, b[i].scales + 4 * c, 4);
            __m256 sc = _mm256_castps128_ps256(_mm_cvtepi32_ps(_mm_cvtepi8_epi32(_mm_cvtsi32_si128(s4))));
            __m256 f0 = _mm256_mul_ps(d, _mm256_permutevar8x32_ps(sc, i01));
            __m256 f1 = _mm256_mul_ps(d, _mm256_permutevar8x32_ps(sc, i23));
            QV(qchunk)(acc, _mm256_sub_epi8(_mm256_or_si256(l0, h0), c32), _mm256_sub_epi8(_mm256_or_si256(l1, h1), c32),
                       f0, f1, x, nx, 4 * i + c, 1);
        }
    }
    for (int t = 0; t < nx; t++) out[t] = hsum16(acc[t]);
}

QDOT_ENTRY(q8_0)
QDOT_ENTRY(q4_0)
QDOT_ENTRY(q5_0)
QDOT_ENTRY(q4_k)
QDOT_ENTRY(q5_k)
QDOT_ENTRY(q6_k)
