// Element access shared by the CUDA kernels: conversion to fp32, rounding back (nearest or stochastic), and
// groups of G consecutive elements read and written with 16-byte (or narrower) vectors where they can be.
#pragma once
#include <type_traits>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "zo_kernels.h"

namespace zk {

// f(T{}) with T the element type of `dtype`: the host-side dispatch of a launch over the element types.
template <typename F> cudaError_t with_element_type(DType dtype, F f) {
  switch (dtype) {
    case DType::kFloat32: return f(float{});
    case DType::kBFloat16: return f(__nv_bfloat16{});
    case DType::kFloat16: return f(__half{});
  }
  return cudaErrorInvalidValue;
}

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

// bf16 stochastic rounding of v as the fp32 word whose high half is the result: bits + the 16 random bits (the
// carry rounds up), or, for NaN, v with its quiet bit set (stays NaN in the high half whatever its payload).
__device__ __forceinline__ uint32_t bf16_stochastic_word(float v, uint32_t r) {
  const uint32_t bits = __float_as_uint(v);
  return v == v ? bits + (r >> 16) : (bits | 0x00400000u);
}

// fp32 -> T, round to nearest even or stochastic with random word r (unbiased: see reference.round_stochastic).
template <typename T> __device__ __forceinline__ T round_to(float v, uint32_t r, bool stochastic);
template <> __device__ __forceinline__ float round_to<float>(float v, uint32_t, bool) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 round_to<__nv_bfloat16>(float v, uint32_t r, bool stochastic) {
  if (stochastic) return __ushort_as_bfloat16(static_cast<unsigned short>(bf16_stochastic_word(v, r) >> 16));
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
template <typename T, int G> constexpr int kVecBytes = G * sizeof(T) < 16 ? G * sizeof(T) : 16;

template <typename T, int G> __device__ __forceinline__ bool vec_aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % kVecBytes<T, G> == 0;
}

// G elements at p, as stored, by 16-byte (or narrower) vectors; p aligned to kVecBytes<T, G>.
template <typename T, int G> __device__ __forceinline__ void load_vec(const T* p, T (&raw)[G]) {
  using V = typename VecOf<kVecBytes<T, G>>::type;
#pragma unroll
  for (int i = 0; i < G * sizeof(T) / sizeof(V); ++i) reinterpret_cast<V*>(raw)[i] = reinterpret_cast<const V*>(p)[i];
}
template <typename T, int G> __device__ __forceinline__ void store_vec(T* p, const T (&v)[G]) {
  using V = typename VecOf<kVecBytes<T, G>>::type;
#pragma unroll
  for (int i = 0; i < G * sizeof(T) / sizeof(V); ++i) reinterpret_cast<V*>(p)[i] = reinterpret_cast<const V*>(v)[i];
}

// Element by element where element j of p exists only for lo <= j < hi (zero / not written otherwise).
template <typename T, int G, typename I>
__device__ __forceinline__ void load_elems(const T* p, I lo, I hi, T (&raw)[G]) {
#pragma unroll
  for (int j = 0; j < G; ++j) raw[j] = (j >= lo && j < hi) ? p[j] : T{};
}
template <typename T, int G, typename I>
__device__ __forceinline__ void store_elems(T* p, I lo, I hi, const T (&v)[G]) {
#pragma unroll
  for (int j = 0; j < G; ++j)
    if (j >= lo && j < hi) p[j] = v[j];
}

template <typename ST, int G>
__device__ __forceinline__ void to_f32(const ST (&raw)[G], float (&v)[G]) {
#pragma unroll
  for (int j = 0; j < G; ++j) v[j] = to_f32(raw[j]);
}

// out[j] = round_to<T>(v[j], r[j], stochastic). bf16 with stochastic rounding takes the high halves of two
// elements' bf16_stochastic_words with one byte permute (round_to takes one element's).
template <typename T, int G>
__device__ __forceinline__ void round_group(const float (&v)[G], const uint32_t (&r)[G], bool stochastic, T (&out)[G]) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value && G % 2 == 0) {
    if (stochastic) {
#pragma unroll
      for (int j = 0; j < G; j += 2)
        reinterpret_cast<uint32_t*>(out)[j / 2] =
            __byte_perm(bf16_stochastic_word(v[j], r[j]), bf16_stochastic_word(v[j + 1], r[j + 1]), 0x7632);
      return;
    }
  }
#pragma unroll
  for (int j = 0; j < G; ++j) out[j] = round_to<T>(v[j], r[j], stochastic);
}

// G elements from local index `local` of a tensor of numel elements: vectors when the group is inside the tensor
// and aligned, element by element otherwise (zero outside [0, numel)).
template <typename T, int G>
__device__ __forceinline__ void load_raw(const T* p, int64_t local, int64_t numel, T (&raw)[G]) {
  if (local >= 0 && local + G <= numel && vec_aligned<T, G>(p + local)) load_vec<T, G>(p + local, raw);
  else load_elems<T, G>(p + local, -local, numel - local, raw);
}

template <typename T, int G>
__device__ __forceinline__ void store_group(T* p, int64_t local, int64_t numel, const float (&v)[G],
                                            const uint32_t (&r)[G], bool stochastic) {
  T out[G];
  round_group<T, G>(v, r, stochastic, out);
  if (local >= 0 && local + G <= numel && vec_aligned<T, G>(p + local)) store_vec<T, G>(p + local, out);
  else store_elems<T, G>(p + local, -local, numel - local, out);
}

}  // namespace zk
