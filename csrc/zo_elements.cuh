// Element access shared by the CUDA kernels: conversion to fp32, rounding back (nearest or stochastic), and
// groups of G consecutive elements read and written with 16-byte (or narrower) vectors where they can be.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace zk {

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

// fp32 -> T, round to nearest even or stochastic with random word r (unbiased: see reference.round_stochastic).
template <typename T> __device__ __forceinline__ T round_to(float v, uint32_t r, bool stochastic);
template <> __device__ __forceinline__ float round_to<float>(float v, uint32_t, bool) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 round_to<__nv_bfloat16>(float v, uint32_t r, bool stochastic) {
  if (stochastic && v == v) v = __uint_as_float((__float_as_uint(v) + (r >> 16)) & 0xFFFF0000u);
  return __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ __half round_to<__half>(float v, uint32_t r, bool stochastic) {
  if (stochastic && v == v) {
    const float s = fabsf(v) * 16777216.0f;  // fp16 subnormals: a uniform grid of 2^-24
    const float fl = floorf(s);
    const bool up = static_cast<float>(r >> 8) * 5.9604644775390625e-08f < s - fl;
    const float sub = copysignf((fl + (up ? 1.0f : 0.0f)) * 5.9604644775390625e-08f, v);
    const float normal = __uint_as_float((__float_as_uint(v) + (r >> 19)) & ~0x1FFFu);
    v = fabsf(v) < 6.103515625e-05f ? sub : normal;
  }
  return __float2half_rn(v);
}

template <int BYTES> struct VecOf;
template <> struct VecOf<16> { using type = uint4; };
template <> struct VecOf<8> { using type = uint2; };
template <> struct VecOf<4> { using type = uint32_t; };

// G elements from local index `local`, as stored: 16-byte (or narrower) vector accesses when the group is inside
// the tensor and aligned, element by element otherwise (zero outside [0, numel)).
template <typename T, int G>
__device__ __forceinline__ void load_raw(const T* p, int64_t local, int64_t numel, T (&raw)[G]) {
  constexpr int kBytes = G * sizeof(T), kVec = kBytes < 16 ? kBytes : 16;
  using V = typename VecOf<kVec>::type;
  if (local >= 0 && local + G <= numel && reinterpret_cast<uintptr_t>(p + local) % kVec == 0) {
#pragma unroll
    for (int i = 0; i < kBytes / kVec; ++i) reinterpret_cast<V*>(raw)[i] = reinterpret_cast<const V*>(p + local)[i];
  } else {
#pragma unroll
    for (int j = 0; j < G; ++j) raw[j] = (local + j >= 0 && local + j < numel) ? p[local + j] : T{};
  }
}

template <typename T, int G>
__device__ __forceinline__ void to_f32(const T (&raw)[G], float (&v)[G]) {
#pragma unroll
  for (int j = 0; j < G; ++j) v[j] = to_f32(raw[j]);
}

template <typename T, int G>
__device__ __forceinline__ void store_group(T* p, int64_t local, int64_t numel, const float (&v)[G],
                                            const uint32_t (&r)[G], bool stochastic) {
  constexpr int kBytes = G * sizeof(T), kVec = kBytes < 16 ? kBytes : 16;
  using V = typename VecOf<kVec>::type;
  T tmp[G];
#pragma unroll
  for (int j = 0; j < G; ++j) tmp[j] = round_to<T>(v[j], r[j], stochastic);
  if (local >= 0 && local + G <= numel && reinterpret_cast<uintptr_t>(p + local) % kVec == 0) {
#pragma unroll
    for (int i = 0; i < kBytes / kVec; ++i) reinterpret_cast<V*>(p + local)[i] = reinterpret_cast<const V*>(tmp)[i];
  } else {
#pragma unroll
    for (int j = 0; j < G; ++j)
      if (local + j >= 0 && local + j < numel) p[local + j] = tmp[j];
  }
}

}  // namespace zk
