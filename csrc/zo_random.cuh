// The counter contract on the device (zokernels/contract.py is the definition; README states it).
// Philox4x32-10 as Random123; Box-Muller on the hardware approximations with a series for ln u near 1;
// the same instruction choices as the Triton backend.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace zk {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;
constexpr uint32_t kRoundingStream = 0xFFFFFFFFu;  // reserved stream of the stochastic-rounding bits

__device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint2 k) {
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c.x;  // one IMAD.WIDE each
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c.z;
    c = make_uint4(static_cast<uint32_t>(p1 >> 32) ^ c.y ^ k.x, static_cast<uint32_t>(p1),
                   static_cast<uint32_t>(p0 >> 32) ^ c.w ^ k.y, static_cast<uint32_t>(p0));
    k.x += kPhiloxW0;
    k.y += kPhiloxW1;
  }
  return c;
}

// Words of counter (lo32(unit), hi32(unit), stream, tensor_id).
__device__ __forceinline__ uint4 unit_words(int64_t unit, uint32_t stream, uint32_t tensor_id, uint2 key) {
  const uint64_t u = static_cast<uint64_t>(unit);
  return philox4x32_10(make_uint4(static_cast<uint32_t>(u), static_cast<uint32_t>(u >> 32), stream, tensor_id), key);
}

// The stochastic-rounding word of element 8 unit + p (p < 8) from the words x of its unit (counter (unit, ..,
// kRoundingStream, tensor_id)): half p % 2 of word p / 2, as the top 16 bits (the low 16 are zero).
__device__ __forceinline__ uint32_t rounding_half(uint4 x, int p) {
  const int j = p >> 1;
  const uint32_t w = j == 0 ? x.x : j == 1 ? x.y : j == 2 ? x.z : x.w;
  return (p & 1) ? (w & 0xFFFF0000u) : (w << 16);
}

// (2 * (x >> 9) + 1) * 2^-24 exactly: a [1, 2) float with 23 mantissa bits minus (1 - 2^-24).
__device__ __forceinline__ float uniform_open(uint32_t x) {
  return __uint_as_float((x >> 9) | 0x3F800000u) - 0.999999940395355224609375f;
}

__device__ __forceinline__ float lg2_approx(float x) { float y; asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ float sin_approx(float x) { float y; asm("sin.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ float cos_approx(float x) { float y; asm("cos.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ float sqrt_approx(float x) { float y; asm("sqrt.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }

// acc[0..3] += c * (the four normals of one Philox call's words x): pairs (x.x, x.y) and (x.z, x.w) give
// r cos(2 pi u1), r sin(2 pi u1) with r = sqrt(-2 ln u0), accumulated by fused multiply-adds. Near u0 = 1 the
// approximate lg2 has absolute error, so below w = 1 - u0 = 1/128 the series -2 ln(1 - w) = 2w + w^2 + 2/3 w^3 + ...
// is used, truncated to w (2 + w): relative error w^2 / 3 in r^2, at most 1.3e-6 absolute in n (r <= 0.125 there).
// Two instructions instead of the five of a series to 2^-24 below 1/64: K = 16 2.7% faster on the H100, with the
// same worst error against float64 over 3 x 2^26 samples (bench/NOTES.md).
__device__ __forceinline__ void add_scaled_pair(uint32_t xa, uint32_t xb, float c, float& acc_cos, float& acc_sin) {
  const float u0 = uniform_open(xa), u1 = uniform_open(xb);
  const float w = 1.0f - u0;  // exact for u0 >= 1/2
  const float r2 = w < 0.0078125f ? w * (2.0f + w) : lg2_approx(u0) * -1.3862943611198906f;
  const float cr = c * sqrt_approx(r2);
  const float angle = u1 * 6.283185307179586f;
  acc_cos = fmaf(cr, cos_approx(angle), acc_cos);
  acc_sin = fmaf(cr, sin_approx(angle), acc_sin);
}

__device__ __forceinline__ void add_scaled_normals(uint4 x, float c, float* acc) {
  add_scaled_pair(x.x, x.y, c, acc[0], acc[1]);
  add_scaled_pair(x.z, x.w, c, acc[2], acc[3]);
}

// The K directions' coefficients and streams: from device arrays, or `scale` and stream0 + k.
struct Directions {
  const float* coeffs;
  float scale;
  const int64_t* streams;
  uint32_t stream0;
  int K;
  __device__ __forceinline__ float coeff(int k) const { return coeffs != nullptr ? coeffs[k] : scale; }
  __device__ __forceinline__ uint32_t stream(int k) const {
    return streams != nullptr ? static_cast<uint32_t>(streams[k]) : stream0 + k;
  }
  // f(c_k, stream_k) for k = 0 .. K - 1. One direction takes c0 and s0 (coeff(0) and stream(0), read once by the
  // caller outside its loop over elements) on a path of its own, without the loop: on the H100 the loop's reads and
  // bookkeeping cost the Gaussian K = 1 kernel 8% (1.14x against 1.05x the copy roofline, bench/NOTES.md).
  // kUnroll2: two directions per loop trip, so their independent Philox chains interleave (the Gaussian kernels
  // for K > 1, which run without a register cap: bench/NOTES.md).
  template <bool kUnroll2 = false, typename F>
  __device__ __forceinline__ void for_each(float c0, uint32_t s0, F f) const {
    if (K == 1) {
      f(c0, s0);
    } else if constexpr (kUnroll2) {
#pragma unroll 2
      for (int k = 0; k < K; ++k) f(coeff(k), stream(k));
    } else {
      for (int k = 0; k < K; ++k) f(coeff(k), stream(k));
    }
  }
  __device__ __forceinline__ bool all_finite() const {
    if (coeffs != nullptr)
      for (int k = 0; k < K; ++k)
        if (!isfinite(coeffs[k])) return false;
    return true;
  }
};

}  // namespace zk
