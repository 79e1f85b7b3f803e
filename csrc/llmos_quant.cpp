// Low-bit matrix-vector / small-M matrix products for llmos (x86-64, AVX2 + FMA + F16C).
//
// Weights are blocks of 32 along the input dimension, laid out like GGUF so its blocks load
// without re-quantization (only split into separate arrays):
//   q4: qs uint8 [N, K/2] (byte j of a block: element j in the low nibble, j+16 in the high one),
//       d, m fp16 [N, K/32]; w = d * q + m, q in 0..15 (Q4_1; Q4_0 is m = -8 d).
//   q8: qs int8 [N, K], d fp16 [N, K/32]; w = d * q (Q8_0).
// The activation rows are quantized to int8 per 32-block (scale xd and xs = xd * sum(q), as
// llama.cpp's q8_1) so each block's dot product runs in 8-bit integer lanes (vpmaddubsw, or
// vpdpbusd with AVX512-VNNI: 32 multiply-adds per instruction instead of 8 fp32 FMAs). The
// scales then cost one int->float convert and one FMA per block (q8) or per pair of blocks
// (q4); the q4 offset term m * sum(x) is just m_b * xs_b per block.
//
// Built (once, cached) by llmos.engine.quant.kernels; every op has a pure-PyTorch equivalent
// there, used where this file cannot be compiled or the CPU lacks AVX2/FMA/F16C.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t QK = 32;  // block length (elements) of every format

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float f16(uint16_t h) { return _cvtsh_ss(h); }

// Eight fp16 scales as fp32, reading only the `n` that exist (a row's last group must not read
// into the next row or past the array: a stray NaN there would poison the sum). Short groups
// use plain narrow loads; a generic copy (a store-forwarding stall) is left for odd counts.
inline __m256 load_scales(const uint16_t* p, int n) {
  __m128i h;
  uint32_t u32;
  switch (n) {
    case 8: h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); break;
    case 4: h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)); break;
    case 2: std::memcpy(&u32, p, 4); h = _mm_cvtsi32_si128(static_cast<int>(u32)); break;
    case 6:
      std::memcpy(&u32, p + 4, 4);
      h = _mm_insert_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)), static_cast<int>(u32), 2);
      break;
    default: {
      alignas(16) uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      std::memcpy(tmp, p, sizeof(uint16_t) * n);
      h = _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
    }
  }
  return _mm256_cvtph_ps(h);
}

// Prefetch the bytes four rows below p: the next row tile's. A decode step streams ~100 MB of
// weights through ~120 calls, each over a few hundred KB spread across 4 interleaved row
// streams, too short for the hardware prefetcher to ramp up; this measured 10-40% faster.
inline void prefetch_ahead(const uint8_t* p, int64_t ldq) {
  _mm_prefetch(reinterpret_cast<const char*>(p + 4 * ldq), _MM_HINT_T0);
}

// 32 4-bit weights of one block as bytes 0..31 in element order (for dequantization).
inline __m256i unpack_q4(const uint8_t* p) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// Lane -> block index within a group of 8 for the q4 kernel's block pairs: lanes 0-3 take the
// pair's first block, lanes 4-7 its second.
alignas(32) constexpr int32_t kPairIdx[4][8] = {
    {0, 0, 0, 0, 1, 1, 1, 1}, {2, 2, 2, 2, 3, 3, 3, 3}, {4, 4, 4, 4, 5, 5, 5, 5}, {6, 6, 6, 6, 7, 7, 7, 7}};

struct Weights {
  const uint8_t* qs;
  const uint16_t *d, *m;  // fp16 bits; m is null for q8
  int64_t N, nb, ldq;     // rows, blocks per row, bytes per row of qs
};

// Quantized activation rows: int8 quants (ldx bytes per row, 32-byte aligned), per-block scale
// d and d * sum(q) as s (nb8 floats per row, zero-padded to a multiple of 8 blocks).
struct Acts {
  const int8_t* q;
  const float *d, *s;
  int64_t M, ldx, nb8;
  Acts rows_from(int64_t i) const { return {q + i * ldx, d + i * nb8, s + i * nb8, M - i, ldx, nb8}; }
};

// Activation rows -> int8 blocks, in per-thread scratch memory reused across calls (a decode
// step makes ~120 of these calls; allocating tensors for them would cost more than the
// quantization itself). `pairs` stores each pair of blocks in the q4 kernel's order:
// [b 0..15 | b+1 0..15 | b 16..31 | b+1 16..31] (an odd last block padded with zeros).
struct Scratch {
  std::vector<__m256i> q;  // __m256i elements: 32-byte aligned storage
  std::vector<float> d, s;
};

Acts quantize_rows(const float* xp, int64_t M, int64_t K, bool pairs) {
  static thread_local Scratch buf;
  const int64_t nb = K / QK, nb8 = (nb + 7) / 8 * 8, ldx = pairs ? (nb + 1) / 2 * 64 : K;
  buf.q.resize(M * ldx / 32);
  buf.d.assign(M * nb8, 0.0f);
  buf.s.assign(M * nb8, 0.0f);
  int8_t* qp = reinterpret_cast<int8_t*>(buf.q.data());
  float *dp = buf.d.data(), *sp = buf.s.data();
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t i = 0; i < M; ++i) {
    int8_t* row = qp + i * ldx;
    if (pairs && nb % 2) std::memset(row + ldx - 64, 0, 64);
    for (int64_t b = 0; b < nb; ++b) {
      const float* p = xp + i * K + b * QK;
      __m256 v0 = _mm256_loadu_ps(p), v1 = _mm256_loadu_ps(p + 8);
      __m256 v2 = _mm256_loadu_ps(p + 16), v3 = _mm256_loadu_ps(p + 24);
      __m256 a = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                               _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
      const float amax = hmax(a);
      const float d = amax / 127.0f;
      const __m256 id = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
      // Round to nearest even (the default MXCSR mode): |q| <= 127, never -128, so the q8
      // kernel's sign trick cannot overflow.
      __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, id)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, id));
      __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, id)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, id));
      __m256i sum = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
      __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
      s4 = _mm_hadd_epi32(s4, s4);
      s4 = _mm_hadd_epi32(s4, s4);
      // The packs work per 128-bit lane; the permute puts the 32 bytes back in element order.
      __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
      packed = _mm256_permutevar8x32_epi32(packed, perm);
      if (pairs) {
        int8_t* dst = row + (b / 2) * 64 + (b % 2) * 16;
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm256_castsi256_si128(packed));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 32), _mm256_extracti128_si256(packed, 1));
      } else {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + b * QK), packed);
      }
      dp[i * nb8 + b] = d;
      sp[i * nb8 + b] = d * static_cast<float>(_mm_cvtsi128_si32(s4));
    }
  }
  return {qp, dp, sp, M, ldx, nb8};
}

namespace avx2 {
#include "llmos_quant_kernels.inc"
}  // namespace avx2

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512vnni")
#define LLMOS_VNNI 1
namespace vnni {
#include "llmos_quant_kernels.inc"
}  // namespace vnni
#undef LLMOS_VNNI
#pragma GCC pop_options

bool cpu_has_vnni() { return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl"); }
int64_t g_isa = cpu_has_vnni() ? 1 : 0;  // 0: AVX2, 1: AVX512-VNNI

// Pick the kernel family (tests run both); returns the one in use. A request the CPU cannot
// honour keeps AVX2.
int64_t set_isa(int64_t isa) {
  g_isa = isa == 1 && cpu_has_vnni() ? 1 : 0;
  return g_isa;
}

// The layout of llmos.engine.quant.linear: q4 uint8 [N, K/2] with fp16 d, m [N, K/32];
// q8 int8 [N, K] with fp16 d [N, K/32]. The fp16 scales travel as int16 bit patterns so that a
// model-wide dtype cast (model.to(torch.bfloat16)) cannot round them.
void check_weights(const at::Tensor& qs, const at::Tensor& d, const c10::optional<at::Tensor>& m) {
  const bool q4 = m.has_value() && m->defined();
  TORCH_CHECK(d.dim() == 2 && d.scalar_type() == at::kShort && d.is_contiguous(),
              "block scales must be a contiguous int16 [N, K/32] tensor of fp16 bits");
  const int64_t N = d.size(0), K = d.size(1) * QK;
  TORCH_CHECK(qs.dim() == 2 && qs.is_contiguous() && qs.size(0) == N && qs.size(1) == (q4 ? K / 2 : K) &&
                  qs.scalar_type() == (q4 ? at::kByte : at::kChar),
              q4 ? "q4 quants must be a contiguous uint8 [N, K/2] tensor" : "q8 quants must be a contiguous int8 [N, K] tensor");
  if (q4)
    TORCH_CHECK(m->scalar_type() == at::kShort && m->is_contiguous() && m->sizes() == d.sizes(),
                "block offsets must be a contiguous int16 tensor (fp16 bits) shaped like the scales");
}

// Whole-matrix dequantization to fp32: for long prompts (exact fp32 activations through BLAS)
// and the Python side's dequantize().
template <bool Q4>
at::Tensor dequant(const at::Tensor& qs, const at::Tensor& d, const at::Tensor& m) {
  const int64_t N = d.size(0), nb = d.size(1), K = nb * QK;
  at::Tensor w = at::empty({N, K}, d.options().dtype(at::kFloat));
  const uint8_t* qp = static_cast<const uint8_t*>(qs.data_ptr());
  const uint16_t* dp = reinterpret_cast<const uint16_t*>(d.data_ptr<int16_t>());
  const uint16_t* mp = Q4 ? reinterpret_cast<const uint16_t*>(m.data_ptr<int16_t>()) : nullptr;
  float* wp = w.data_ptr<float>();
  at::parallel_for(0, N * nb, 1024, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const __m256 dv = _mm256_set1_ps(f16(dp[b]));
      float* out = wp + b * QK;
      if constexpr (Q4) {
        const __m256 mv = _mm256_set1_ps(f16(mp[b]));
        const __m256i q = unpack_q4(qp + b * (QK / 2));
        for (int k = 0; k < 4; ++k) {
          const __m256i q32 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
              reinterpret_cast<const __m128i*>(reinterpret_cast<const uint8_t*>(&q) + 8 * k)));
          // d * q + m in this order, as gguf.quants computes it (bit-identical values).
          _mm256_storeu_ps(out + 8 * k, _mm256_add_ps(_mm256_mul_ps(dv, _mm256_cvtepi32_ps(q32)), mv));
        }
      } else {
        for (int k = 0; k < 4; ++k) {
          const __m256i q32 = _mm256_cvtepi8_epi32(
              _mm_loadl_epi64(reinterpret_cast<const __m128i*>(qp + b * QK + 8 * k)));
          _mm256_storeu_ps(out + 8 * k, _mm256_mul_ps(dv, _mm256_cvtepi32_ps(q32)));
        }
      }
    }
  });
  return w;
}


// y = x @ W.T + bias for x [..., K] (any float dtype; computed in fp32). Up to `max_rows` rows
// of x run the low-bit kernel; more rows dequantize W once and use BLAS. Deciding here, not in
// Python, keeps each of a decode step's ~120 calls down to one dispatch.
at::Tensor linear(const at::Tensor& x_in, const at::Tensor& qs, const at::Tensor& d,
                  const c10::optional<at::Tensor>& m_opt, const c10::optional<at::Tensor>& bias, int64_t max_rows) {
  const bool q4 = m_opt.has_value() && m_opt->defined();
  TORCH_CHECK(x_in.dim() >= 1, "x must have at least one dimension");
  const int64_t K = x_in.size(-1), N = qs.size(0), nb = K / QK, M = K ? x_in.numel() / K : 0;
  check_weights(qs, d, m_opt);
  TORCH_CHECK(d.size(1) == nb && K % QK == 0, "x has ", K, " features, the weight ", d.size(1) * QK);
  at::Tensor bias32;  // fp32 (a bf16 model's cast reaches the bias too)
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->numel() == N, "bias must have ", N, " elements");
    bias32 = bias->to(at::kFloat).contiguous();
  }
  const float* bp = bias32.defined() ? bias32.data_ptr<float>() : nullptr;
  const at::Tensor x = x_in.to(at::kFloat).contiguous();  // no-ops for contiguous fp32
  if (M > max_rows) {
    at::Tensor y = at::linear(x, q4 ? dequant<true>(qs, d, *m_opt) : dequant<false>(qs, d, d), bias32);
    return y.to(x_in.scalar_type());
  }
  std::vector<int64_t> shape(x_in.sizes().begin(), x_in.sizes().end());
  shape.back() = N;
  at::Tensor y = at::empty(shape, x.options());
  if (M == 0 || N == 0) return y.to(x_in.scalar_type());
  const Acts a = quantize_rows(x.data_ptr<float>(), M, K, q4);
  const Weights w{static_cast<const uint8_t*>(qs.data_ptr()), reinterpret_cast<const uint16_t*>(d.data_ptr<int16_t>()),
                  q4 ? reinterpret_cast<const uint16_t*>(m_opt->data_ptr<int16_t>()) : nullptr, N, nb, qs.size(1)};
  float* yp = y.data_ptr<float>();
  const bool use_vnni = g_isa == 1;
  // Work is split in 4-row units (whole tiles for either tiling); small products stay on the
  // calling thread, where waking the second one would cost more than it saves.
  const int64_t units = (N + 3) / 4;
  const int64_t grain = std::max<int64_t>(1, 8192 / (4 * K * M));
  at::parallel_for(0, units, grain, [&](int64_t u0, int64_t u1) {
    const int64_t n0 = u0 * 4, n1 = std::min(u1 * 4, N);
    if (q4) {
      if (use_vnni) vnni::run<true>(n0, n1, w, a, yp, bp);
      else avx2::run<true>(n0, n1, w, a, yp, bp);
    } else {
      if (use_vnni) vnni::run<false>(n0, n1, w, a, yp, bp);
      else avx2::run<false>(n0, n1, w, a, yp, bp);
    }
  });
  return y.to(x_in.scalar_type());
}

// fp32 weights, R rows x MT activation rows (K a multiple of 8). torch's own fp32
// matrix-vector product reads weights at ~11 GB/s here, a third of the memory bandwidth;
// this plain FMA loop with the same prefetch as the low-bit kernels reaches most of it.
template <int R, int MT>
void dense_tile(const float* w, int64_t K, const float* x, float* y, int64_t ldy, const float* bias) {
  __m256 acc[R][MT];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < MT; ++i) acc[r][i] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k += 8) {
    __m256 wv[R];
    for (int r = 0; r < R; ++r) {
      if (k % 16 == 0) _mm_prefetch(reinterpret_cast<const char*>(w + r * K + k + 4 * K), _MM_HINT_T0);
      wv[r] = _mm256_loadu_ps(w + r * K + k);
    }
    for (int i = 0; i < MT; ++i) {
      const __m256 xv = _mm256_loadu_ps(x + i * K + k);
      for (int r = 0; r < R; ++r) acc[r][i] = _mm256_fmadd_ps(wv[r], xv, acc[r][i]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < MT; ++i) y[i * ldy + r] = hsum(acc[r][i]) + (bias ? bias[r] : 0.0f);
}

template <int R>
void dense_rows(int64_t n0, int64_t n1, const float* w, int64_t N, int64_t K, const float* x, int64_t M,
                float* y, const float* bias) {
  for (int64_t n = n0; n < n1; n += R) {
    for (int64_t i = 0; i < M; i += 4) {
      const float *wn = w + n * K, *xi = x + i * K, *b = bias ? bias + n : nullptr;
      float* yi = y + i * N + n;
      switch (std::min<int64_t>(4, M - i)) {
        case 1: dense_tile<R, 1>(wn, K, xi, yi, N, b); break;
        case 2: dense_tile<R, 2>(wn, K, xi, yi, N, b); break;
        case 3: dense_tile<R, 3>(wn, K, xi, yi, N, b); break;
        default: dense_tile<R, 4>(wn, K, xi, yi, N, b); break;
      }
    }
  }
}

// y = x @ w.T + bias with fp32 weights: our loop up to `max_rows` rows of x, BLAS beyond.
at::Tensor dense(const at::Tensor& x_in, const at::Tensor& w, const c10::optional<at::Tensor>& bias,
                 int64_t max_rows) {
  TORCH_CHECK(x_in.dim() >= 1 && w.dim() == 2, "x must be [..., K] and w [N, K]");
  const int64_t K = x_in.size(-1), N = w.size(0), M = K ? x_in.numel() / K : 0;
  TORCH_CHECK(w.size(1) == K, "x has ", K, " features, the weight ", w.size(1));
  const bool has_bias = bias.has_value() && bias->defined();
  const bool ours = M <= max_rows && K % 8 == 0 && w.scalar_type() == at::kFloat && w.is_contiguous() &&
                    x_in.scalar_type() == at::kFloat &&
                    (!has_bias || (bias->scalar_type() == at::kFloat && bias->is_contiguous()));
  if (!ours) return at::linear(x_in, w, has_bias ? *bias : at::Tensor());
  const at::Tensor x = x_in.contiguous();
  std::vector<int64_t> shape(x_in.sizes().begin(), x_in.sizes().end());
  shape.back() = N;
  at::Tensor y = at::empty(shape, x.options());
  if (M == 0 || N == 0) return y;
  const float *wp = w.data_ptr<float>(), *xp = x.data_ptr<float>(), *bp = has_bias ? bias->data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const int64_t units = (N + 3) / 4, grain = std::max<int64_t>(1, 2048 / (4 * K * M));
  at::parallel_for(0, units, grain, [&](int64_t u0, int64_t u1) {
    const int64_t n0 = u0 * 4, n1 = std::min(u1 * 4, N), R = M == 1 ? 4 : 2, nr = n0 + (n1 - n0) / R * R;
    if (R == 4) dense_rows<4>(n0, nr, wp, N, K, xp, M, yp, bp);
    else dense_rows<2>(n0, nr, wp, N, K, xp, M, yp, bp);
    dense_rows<1>(nr, n1, wp, N, K, xp, M, yp, bp);
  });
  return y;
}

at::Tensor dequantize(const at::Tensor& qs, const at::Tensor& d, const c10::optional<at::Tensor>& m) {
  check_weights(qs, d, m);
  return m.has_value() && m->defined() ? dequant<true>(qs, d, *m) : dequant<false>(qs, d, d);
}

}  // namespace

#ifndef LLMOS_LIB
#define LLMOS_LIB llmos_quant
#endif

TORCH_LIBRARY(LLMOS_LIB, lib) {
  lib.def("set_isa(int isa) -> int", &set_isa);
  lib.def("linear(Tensor x, Tensor qs, Tensor d, Tensor? m, Tensor? bias, int max_rows) -> Tensor");
  lib.def("dequantize(Tensor qs, Tensor d, Tensor? m) -> Tensor");
  lib.def("dense(Tensor x, Tensor w, Tensor? bias, int max_rows) -> Tensor");
}

TORCH_LIBRARY_IMPL(LLMOS_LIB, CPU, lib) {
  lib.impl("linear", &linear);
  lib.impl("dequantize", &dequantize);
  lib.impl("dense", &dense);
}
