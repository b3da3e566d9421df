/* AVX-512 integer-path kernel bodies, included twice by kernels_avx512.c: QV_VNNI 1 (vpdpbusd, functions
 * built for the avx512vnni target) and QV_VNNI 0 (AVX-512BW maddubs). QV(name) gives each copy its own names.
 * Both compute the exact int32 lane sums of kernels.h, so both equal the scalar reference bit for bit.
 *
 * Lane l of a zmm = 4 consecutive bytes = elements 4l..4l+3 of a 64-element chunk: lanes 0..7 lie in
 * activation block 2k, lanes 8..15 in block 2k+1. Each loaded weight chunk serves all nx tokens. */

/* Exact p[l] = sum of 4 products w * (u - 128) for each token, then acc += (float)p * (fw * xd), for R
 * weight rows (1 or 2: register blocking, each loaded activation chunk serves every row; each row's
 * operations are exactly those of R = 1). The lane mask is 0xffff, or 0x00ff for the half chunk that ends
 * a row with an odd number of 32-blocks. wpos: every level is in 0..127, so w can be the unsigned operand
 * against the signed q = u - 128 (no 32-block type has that; the K-quants use their own format below). */
QV_FN void QV(qchunk)(__m512 acc[][HKV_QX_MAX_TOK], int R, const __m512i *w, const __m512 *fw, const hkv_qx *x,
                      int nx, int64_t k, __mmask16 lanes, int wpos, int64_t n) {
    /* the tokens are consecutive (kernels.h): one base pointer each for u and dl instead of 2 nx pointers,
     * which left no registers for the accumulators (8-token kernels spilled them every chunk) */
    const uint8_t *u0 = x[0].u + 64 * k;
    const float *l0 = x[0].dl + 16 * k;
    const __m512i bias = _mm512_set1_epi8((char)0x80);
#if QV_VNNI
    /* few tokens and w >= 0: q = u ^ 0x80 per token (1 op each); otherwise dpbusd(u, w) = sum (q + 128) w
     * with each token's sum started at -128 * sum(w), computed once per weight chunk (2 ops) */
    int signed_q = wpos && nx <= 2;
    __m512i nc[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
    for (int r = 0; r < R; r++)
        if (!signed_q) nc[r] = _mm512_sub_epi32(nc[r], _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, w[r]));
#else
    __m512i aw[2];
    __mmask64 neg[2] = {0, 0};
    for (int r = 0; r < R; r++) {
        aw[r] = wpos ? w[r] : _mm512_abs_epi8(w[r]);
        neg[r] = wpos ? 0 : _mm512_movepi8_mask(w[r]);
    }
    const __m512i ones = _mm512_set1_epi16(1);
#endif
    for (int t = 0; t < nx; t++) {
        __m512 xd;
        __m512i u;
        if (lanes == 0xffff) {
            u = _mm512_loadu_si512(u0 + t * n);
            xd = _mm512_loadu_ps(l0 + t * (n / 4));
        } else { /* nothing past the row's end is read */
            u = _mm512_maskz_loadu_epi8((__mmask64)0xffffffffu, u0 + t * n);
            xd = _mm512_maskz_loadu_ps(0x00ff, l0 + t * (n / 4));
        }
#if QV_VNNI
        __m512i qs = signed_q ? _mm512_xor_si512(u, bias) : u;
#else
        __m512i q = _mm512_xor_si512(u, bias);
#endif
        for (int r = 0; r < R; r++) {
#if QV_VNNI
            __m512i p = signed_q ? _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[r], qs) : _mm512_dpbusd_epi32(nc[r], u, w[r]);
#else
            /* sign(q, w) * |w| = q * w; |q| <= 127 and |w| <= 128 keep maddubs' int16 pairs from saturating */
            __m512i qr = wpos ? q : _mm512_mask_sub_epi8(q, neg[r], _mm512_setzero_si512(), q);
            __m512i p = _mm512_madd_epi16(_mm512_maddubs_epi16(aw[r], qr), ones);
#endif
            acc[r][t] = _mm512_mask3_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(fw[r], xd), acc[r][t], lanes);
        }
    }
}

QV_FN void QV(zero_acc)(__m512 acc[][HKV_QX_MAX_TOK], int R, int nx) {
    for (int r = 0; r < R; r++)
        for (int t = 0; t < nx; t++) acc[r][t] = _mm512_setzero_ps();
}

QV_FN void QV(qdot_q8_0_n)(const uint8_t *row, size_t stride, int R, const hkv_qx *x, int nx, float *out, int64_t n) {
    __m512 acc[2][HKV_QX_MAX_TOK];
    QV(zero_acc)(acc, R, nx);
    __m512i w[2];
    __m512 fw[2];
    int64_t nb = n / QK8_0, k = 0;
    for (; 2 * k + 1 < nb; k++) {
        for (int r = 0; r < R; r++) {
            const block_q8_0 *b0 = (const block_q8_0 *)(row + r * stride) + 2 * k, *b1 = b0 + 1;
            w[r] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)b0->qs)),
                                      _mm256_loadu_si256((const __m256i *)b1->qs), 1);
            fw[r] = pair_scales(b0, (int)(sizeof(block_q8_0) / 2));
        }
        QV(qchunk)(acc, R, w, fw, x, nx, k, 0xffff, 0, n);
    }
    if (2 * k < nb) {
        for (int r = 0; r < R; r++) {
            const block_q8_0 *b0 = (const block_q8_0 *)(row + r * stride) + 2 * k;
            w[r] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)b0->qs)), _mm256_setzero_si256(), 1);
            fw[r] = two_scales(h2f(b0->d), 0.0f);
        }
        QV(qchunk)(acc, R, w, fw, x, nx, k, 0x00ff, 0, n);
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < nx; t++) out[r * nx + t] = hsum16(acc[r][t]);
}

/* Q4_0 / Q5_0 (has_qh): 32 levels of one block as bytes, offset removed. */
QX_INLINE __m256i QV(lv32)(const uint8_t *blk, int has_qh) {
    if (!has_qh) return _mm256_sub_epi8(nibbles16(((const block_q4_0 *)blk)->qs), _mm256_set1_epi8(8));
    const block_q5_0 *b = (const block_q5_0 *)blk;
    uint32_t qh;
    memcpy(&qh, b->qh, 4);
    /* element e's 5th bit is qh bit e: used directly as the byte mask that adds 16 */
    __m256i v = nibbles16(b->qs);
    v = _mm256_mask_add_epi8(v, (__mmask32)qh, v, _mm256_set1_epi8(16));
    return _mm256_sub_epi8(v, _mm256_set1_epi8(16));
}

QV_FN void QV(qdot_x0_n)(const uint8_t *row, size_t stride, int R, size_t bsize, int has_qh, const hkv_qx *x, int nx,
                         float *out, int64_t n) {
    __m512 acc[2][HKV_QX_MAX_TOK];
    QV(zero_acc)(acc, R, nx);
    __m512i w[2];
    __m512 fw[2];
    int64_t nb = n / 32, k = 0;
    for (; 2 * k + 1 < nb; k++) {
        for (int r = 0; r < R; r++) {
            const uint8_t *b0 = row + r * stride + (size_t)(2 * k) * bsize, *b1 = b0 + bsize;
            w[r] = _mm512_inserti64x4(_mm512_castsi256_si512(QV(lv32)(b0, has_qh)), QV(lv32)(b1, has_qh), 1);
            /* d is the first field of both block layouts */
            fw[r] = pair_scales(b0, (int)(bsize / 2));
        }
        QV(qchunk)(acc, R, w, fw, x, nx, k, 0xffff, 0, n);
    }
    if (2 * k < nb) {
        for (int r = 0; r < R; r++) {
            const uint8_t *b0 = row + r * stride + (size_t)(2 * k) * bsize;
            w[r] = _mm512_inserti64x4(_mm512_castsi256_si512(QV(lv32)(b0, has_qh)), _mm256_setzero_si256(), 1);
            fw[r] = two_scales(h2f(*(const uint16_t *)b0), 0.0f);
        }
        QV(qchunk)(acc, R, w, fw, x, nx, k, 0x00ff, 0, n);
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < nx; t++) out[r * nx + t] = hsum16(acc[r][t]);
}

QV_FN void QV(qdot_q4_0_n)(const uint8_t *row, size_t stride, int R, const hkv_qx *x, int nx, float *out, int64_t n) {
    QV(qdot_x0_n)(row, stride, R, sizeof(block_q4_0), 0, x, nx, out, n);
}

QV_FN void QV(qdot_q5_0_n)(const uint8_t *row, size_t stride, int R, const hkv_qx *x, int nx, float *out, int64_t n) {
    QV(qdot_x0_n)(row, stride, R, sizeof(block_q5_0), 1, x, nx, out, n);
}

/* ---- K-quant types: the super-block format of kernels.h (one activation scale per 256 elements).
 *
 * A decoded super-block of one row: w[c] = the 64 unsigned levels of chunk c in element order, sc[c] = the
 * integer scale of each int16 pair maddubs makes (word 2l, 2l+1 = lane l), coef = the 16 block-sum
 * coefficients as int16, d / dm = the float factors of isum / mi. */
typedef struct { __m512i w[4], sc[4]; __m256i coef; float d, dm; } QV(ksb);

/* One super-block of R rows against nx tokens: isum over the 4 chunks in int32 (maddubs: u8 levels x s8 q
 * -> int16 pairs <= 2 * 63 * 127; then pairs x scale -> int32 lanes), then per (row, token) one cvt + fma
 * and the block-sum term on lanes 0..7. */
QV_FN void QV(ksb_dot)(__m512 acc[][HKV_QX_MAX_TOK], int R, const QV(ksb) *k, const hkv_qx *x, int nx, int64_t i) {
    for (int t = 0; t < nx; t++) {
        const int8_t *q = x[t].qk + QK_K * i;
        __m512i is[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
        for (int c = 0; c < 4; c++) {
            __m512i qc = _mm512_loadu_si512(q + 64 * c);
            for (int r = 0; r < R; r++) {
                __m512i p = _mm512_maddubs_epi16(k[r].w[c], qc);
#if QV_VNNI
                is[r] = _mm512_dpwssd_epi32(is[r], p, k[r].sc[c]);
#else
                is[r] = _mm512_add_epi32(is[r], _mm512_madd_epi16(p, k[r].sc[c]));
#endif
            }
        }
        __m256i bk = _mm256_loadu_si256((const __m256i *)(x[t].bk + 16 * i));
        float dk = x[t].dk[i];
        for (int r = 0; r < R; r++) {
            __m256 mi = _mm256_cvtepi32_ps(_mm256_madd_epi16(k[r].coef, bk));
            acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[r]), _mm512_set1_ps(k[r].d * dk), acc[r][t]);
            acc[r][t] = _mm512_mask3_fnmadd_ps(_mm512_castps256_ps512(mi), _mm512_set1_ps(k[r].dm * dk), acc[r][t], 0x00ff);
        }
    }
}

/* Q4_K (has_qh 0) / Q5_K: one 64-byte load of qs holds chunks 2cc and 2cc+1 (low nibbles: their first 32
 * elements, high nibbles: their last 32), put in element order by 128-bit lane shuffles. */
QV_FN void QV(k45_decode)(QV(ksb) *k, const uint8_t *blk, int has_qh) {
    const __m512i m4z = _mm512_set1_epi8(0x0f), b16z = _mm512_set1_epi8(16);
    const block_q4_K *b4 = (const block_q4_K *)blk;
    const block_q5_K *b5 = (const block_q5_K *)blk;
    const uint8_t *qs = has_qh ? b5->qs : b4->qs;
    /* the 8 six-bit scales and mins of k_scale_min, four at a time in 32-bit words */
    uint32_t w0, w1, w2;
    memcpy(&w0, b4->scales, 4); memcpy(&w1, b4->scales + 4, 4); memcpy(&w2, b4->scales + 8, 4);
    uint64_t sc8 = (uint64_t)(w0 & 0x3f3f3f3fu) | (uint64_t)((w2 & 0x0f0f0f0fu) | ((w0 >> 6 & 0x03030303u) << 4)) << 32;
    uint64_t m8 = (uint64_t)(w1 & 0x3f3f3f3fu) | (uint64_t)((w2 >> 4 & 0x0f0f0f0fu) | ((w1 >> 6 & 0x03030303u) << 4)) << 32;
    k->d = h2f(b4->d); /* d, dmin: same offsets in both layouts */
    k->dm = h2f(b4->dmin);
    __m512i s16 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc8)));
    for (int c = 0; c < 4; c++) /* words 0..15: scale of sub-block 2c, 16..31: of 2c+1 */
        k->sc[c] = _mm512_permutexvar_epi16(_mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16((short)(2 * c))),
                                                               _mm256_set1_epi16((short)(2 * c + 1)), 1), s16);
    __m128i m16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)m8));
    k->coef = _mm256_set_m128i(_mm_unpackhi_epi16(m16, m16), _mm_unpacklo_epi16(m16, m16));
    __m256i vqh = has_qh ? _mm256_loadu_si256((const __m256i *)b5->qh) : _mm256_setzero_si256();
    for (int cc = 0; cc < 2; cc++) {
        __m512i q = _mm512_loadu_si512(qs + 64 * cc);
        __m512i lo = _mm512_and_si512(q, m4z), hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4z);
        if (has_qh) { /* bit 2c / 2c+1 of qh[l] is the 5th bit of element l of the two halves of chunk c */
            __m512i vq2 = _mm512_broadcast_i64x4(vqh);
            __m512i blo = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << (4 * cc))), _mm256_set1_epi8((char)(4 << (4 * cc))), 1);
            __m512i bhi = _mm512_inserti64x4(_mm512_set1_epi8((char)(2 << (4 * cc))), _mm256_set1_epi8((char)(8 << (4 * cc))), 1);
            lo = _mm512_mask_add_epi8(lo, _mm512_test_epi8_mask(vq2, blo), lo, b16z);
            hi = _mm512_mask_add_epi8(hi, _mm512_test_epi8_mask(vq2, bhi), hi, b16z);
        }
        k->w[2 * cc] = _mm512_shuffle_i64x2(lo, hi, 0x44);
        k->w[2 * cc + 1] = _mm512_shuffle_i64x2(lo, hi, 0xEE);
    }
}

/* Q6_K: half h of ql (64 bytes) gives chunk 2h (low nibbles) and 2h+1 (high nibbles) in element order; qh
 * is broadcast to both 256-bit halves and shifted per 16-bit word by 0 / 2 (chunk 2h) or 4 / 6 (2h+1). */
QV_FN void QV(q6k_decode)(QV(ksb) *k, const uint8_t *blk) {
    const block_q6_K *b = (const block_q6_K *)blk;
    const __m512i m4z = _mm512_set1_epi8(0x0f), m2z = _mm512_set1_epi8(3);
    const __m512i sh02 = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);
    const __m512i sh46 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
    /* word wd of chunk c lies in lane wd / 2, elements 64c + 2wd.., 16-block 4c + wd / 8 */
    const __m512i grp = _mm512_set_epi16(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2,
                                         1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    k->d = k->dm = h2f(b->d);
    __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
    for (int c = 0; c < 4; c++)
        k->sc[c] = _mm512_permutexvar_epi16(_mm512_add_epi16(grp, _mm512_set1_epi16((short)(4 * c))), _mm512_castsi256_si512(s16));
    k->coef = _mm256_slli_epi16(s16, 5); /* 32 * sc: |.| <= 4096 */
    for (int h = 0; h < 2; h++) {
        __m512i L = _mm512_loadu_si512(b->ql + 64 * h);
        __m512i Q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qh + 32 * h)));
        for (int e = 0; e < 2; e++) {
            __m512i l = _mm512_and_si512(e ? _mm512_srli_epi16(L, 4) : L, m4z);
            __m512i hb = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(Q, e ? sh46 : sh02), m2z), 4);
            k->w[2 * h + e] = _mm512_or_si512(l, hb);
        }
    }
}

/* kind: 0 Q4_K, 1 Q5_K, 2 Q6_K */
QV_FN void QV(qdot_k_n)(const uint8_t *row, size_t stride, int R, int kind, const hkv_qx *x, int nx, float *out, int64_t n) {
    size_t bsize = kind == 0 ? sizeof(block_q4_K) : kind == 1 ? sizeof(block_q5_K) : sizeof(block_q6_K);
    __m512 acc[2][HKV_QX_MAX_TOK];
    QV(zero_acc)(acc, R, nx);
    QV(ksb) k[2];
    for (int64_t i = 0; i < n / QK_K; i++) {
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = row + r * stride + (size_t)i * bsize;
            if (kind == 2) QV(q6k_decode)(&k[r], blk);
            else QV(k45_decode)(&k[r], blk, kind);
        }
        QV(ksb_dot)(acc, R, k, x, nx, i);
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < nx; t++) out[r * nx + t] = hsum16(acc[r][t]);
}

QV_FN void QV(qdot_q4_k_n)(const uint8_t *row, size_t stride, int R, const hkv_qx *x, int nx, float *out, int64_t n) {
    QV(qdot_k_n)(row, stride, R, 0, x, nx, out, n);
}

QV_FN void QV(qdot_q5_k_n)(const uint8_t *row, size_t stride, int R, const hkv_qx *x, int nx, float *out, int64_t n) {
    QV(qdot_k_n)(row, stride, R, 1, x, nx, out, n);
}

QV_FN void QV(qdot_q6_k_n)(const uint8_t *row, size_t stride, int R, const hkv_qx *x, int nx, float *out, int64_t n) {
    QV(qdot_k_n)(row, stride, R, 2, x, nx, out, n);
}

QDOT_ENTRY(q8_0)
QDOT_ENTRY(q4_0)
QDOT_ENTRY(q5_0)
QDOT_ENTRY(q4_k)
QDOT_ENTRY(q5_k)
QDOT_ENTRY(q6_k)
