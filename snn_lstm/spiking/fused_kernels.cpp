// The time loops of the fused spiking LSTM layer on the CPU (see fused.py).
//
// Matrix products go to ATen (oneDNN/MKL), except the forward's recurrent product of
// binary spikes, a sum of weight rows (add_spike_rows); the per-step elementwise work (spikes,
// cell update, bit packing and the surrogate derivatives in the forward; the
// surrogate products in the backward) runs here, in one vectorisable pass over the
// step's [B, 4H] block instead of a dozen separate tensor operations.
//
// Layout: pre-activations a[b, k*H + j] for gate k in (i, f, g, o). A step's binary
// state is packed one byte per unit: bit 0 i, 1 f, 2 g, 3 o, 4 c.
//
// Built with -fno-math-errno -fno-trapping-math (as PyTorch itself is), without
// which GCC keeps branches and library calls and vectorises none of the loops.

#include <torch/extension.h>

#include <cmath>
#include <cstring>
#include <vector>

namespace {

constexpr uint8_t BIT_I = 1, BIT_F = 2, BIT_G = 4, BIT_O = 8, BIT_C = 16;
// Smallest chunk of batch rows a thread takes in a forward step: below that the
// threads' start-up costs more than they share.
constexpr int64_t ROWS_PER_THREAD = 32;

// Surrogate families, numbered as SURROGATE_IDS in fused.py.
enum Family : int { GAUSSIAN = 0, PIECEWISE_LINEAR = 1, FAST_SIGMOID = 2, ATAN = 3, STRAIGHT_THROUGH = 4 };

// exp(x) for float, written so that the compiler vectorises it (std::exp is a
// library call it cannot): Cody-Waite reduction x = n ln2 + r, a degree-6
// polynomial for e^r (Cephes expf, error about 1 ulp), scaling by 2^n via the
// exponent bits. Inputs below -87 give 0.
inline float exp_vec(float x) {
  const bool tiny = x < -87.0f;
  x = x < -87.0f ? -87.0f : x;  // ternaries, not fmin/fmax: those stay library calls
  x = x > 88.0f ? 88.0f : x;
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  const float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return tiny ? 0.0f : p * scale;
}
inline double exp_vec(double x) { return std::exp(x); }  // float64 is for checks, not speed

// g_a(u), the same formulas as surrogate.py, with the width's constants
// precomputed so the inner loops hold only multiplies, one division at most and exp.
template <typename scalar_t>
struct Surrogate {
  int family;
  scalar_t a, inv_a, scale;

  Surrogate(int family_, double width) : family(family_), a(width), inv_a(1.0 / width) {
    switch (family) {
      case GAUSSIAN: scale = scalar_t(1.0 / std::sqrt(M_PI * width)); break;
      case ATAN: scale = scalar_t(M_PI / 2 * width); break;
      case STRAIGHT_THROUGH: scale = scalar_t(0.5 / width); break;
      default: scale = scalar_t(1);
    }
  }

  template <int FAMILY>
  inline scalar_t at(scalar_t u) const {
    const scalar_t au = u < 0 ? -u : u;
    if constexpr (FAMILY == GAUSSIAN) {
      return exp_vec(-u * u * inv_a) * scale;  // exp(-u^2 / a) / sqrt(pi a)
    } else if constexpr (FAMILY == PIECEWISE_LINEAR) {
      const scalar_t v = scalar_t(1) - au * inv_a;  // max(0, 1 - |u| / a) / a
      return v > 0 ? v * inv_a : scalar_t(0);
    } else if constexpr (FAMILY == FAST_SIGMOID) {
      const scalar_t d = scalar_t(1) + a * au;  // 1 / (1 + a |u|)^2
      return scalar_t(1) / (d * d);
    } else if constexpr (FAMILY == ATAN) {
      const scalar_t z = scale * u;  // (a / 2) / (1 + (pi / 2 a u)^2)
      return (a * scalar_t(0.5)) / (scalar_t(1) + z * z);
    } else {
      return au < a ? scale : scalar_t(0);  // 1[|u| < a] / (2 a)
    }
  }
};

struct Params {
  double theta1, theta2, alpha1, alpha2;
  int family;
  double write_scale = 1.0;  // w: what a write adds to an analog cell
};

// One step forward. a: [B, 4H] pre-activations, overwritten with g'(a - theta) when
// `surrogates` (what the backward needs), left as is otherwise.
template <typename scalar_t, int FAMILY, bool SURROGATES>
void step_forward(scalar_t* __restrict__ a, const scalar_t* __restrict__ c_prev, scalar_t* __restrict__ h,
                  scalar_t* __restrict__ c, uint8_t* __restrict__ bits, int64_t first, int64_t end, int64_t hidden,
                  const Params& p) {
  const scalar_t th1 = p.theta1, th2 = p.theta2;
  const Surrogate<scalar_t> gate(FAMILY, p.alpha1), candidate(FAMILY, p.alpha2);
  for (int64_t b = first; b < end; ++b) {
    scalar_t* __restrict__ ai = a + b * 4 * hidden;
    scalar_t* __restrict__ af = ai + hidden;
    scalar_t* __restrict__ ag = ai + 2 * hidden;
    scalar_t* __restrict__ ao = ai + 3 * hidden;
    const int64_t row = b * hidden;
#pragma omp simd
    for (int64_t j = 0; j < hidden; ++j) {
      const scalar_t ui = ai[j] - th1, uf = af[j] - th1, ug = ag[j] - th2, uo = ao[j] - th1;
      const int ib = ui > 0, fb = uf > 0, gb = ug > 0, ob = uo > 0;
      const scalar_t i = scalar_t(ib), f = scalar_t(fb), g = scalar_t(gb), o = scalar_t(ob);
      // s = f c_prev + i g is 0, 1 or 2 for binary c_prev; both cell modes give c = (s > 0)
      const int cb = (f * c_prev[row + j] + i * g) > 0;
      const scalar_t cell = scalar_t(cb);
      c[row + j] = cell;
      h[row + j] = o * cell;
      bits[row + j] = static_cast<uint8_t>(ib | (fb << 1) | (gb << 2) | (ob << 3) | (cb << 4));
      if constexpr (SURROGATES) {
        ai[j] = gate.template at<FAMILY>(ui);
        af[j] = gate.template at<FAMILY>(uf);
        ag[j] = candidate.template at<FAMILY>(ug);
        ao[j] = gate.template at<FAMILY>(uo);
      }
    }
  }
}

// One step backward:
//   dL/dh_t = (dL/dh_t from above) + da_{t+1} W_hh
//   dL/dc_t = o_t dL/dh_t + f_{t+1} dL/ds_{t+1} (+ dL/dc_T at the last step)
//   dL/ds_t = dL/dc_t (straight through) or g'(s_t - theta1) dL/dc_t (surrogate)
//   da = (ds g, ds c_{t-1}, ds i, dh c_t) * G_t, written over G_t
// and, on the way, h_{t-1} unpacked to floats into its columns of the [x, h_prev, 1] rows.
// FIRST: c_{t-1}, h_{t-1} are the float c0, h0 rather than bits; LAST: no step t+1, plus dL/dc_T.
template <typename scalar_t, bool FIRST, bool LAST, bool CELL_SURROGATE>
void step_backward(scalar_t* __restrict__ sur_da, const uint8_t* __restrict__ bits,
                   const uint8_t* __restrict__ bits_next, const uint8_t* __restrict__ bits_prev,
                   const scalar_t* __restrict__ c0, const scalar_t* __restrict__ h0,
                   const scalar_t* __restrict__ grad_h, const scalar_t* __restrict__ dh_rec,
                   const scalar_t* __restrict__ grad_c_last, scalar_t* __restrict__ ds,
                   scalar_t* __restrict__ h_prev, int64_t h_prev_stride, int64_t batch, int64_t hidden,
                   const scalar_t* cell_sur) {
  const scalar_t cs0 = cell_sur[0], cs1 = cell_sur[1], cs2 = cell_sur[2];
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t row = b * hidden;
    scalar_t* __restrict__ d = sur_da + 4 * row;
    scalar_t* __restrict__ hp = h_prev + b * h_prev_stride;
#pragma omp simd
    for (int64_t j = 0; j < hidden; ++j) {
      const int here = bits[row + j];
      const scalar_t i = (here & BIT_I) ? 1 : 0, f = (here & BIT_F) ? 1 : 0;
      const scalar_t g = (here & BIT_G) ? 1 : 0, o = (here & BIT_O) ? 1 : 0;
      const scalar_t cell = (here & BIT_C) ? 1 : 0;
      scalar_t c_prev;
      if constexpr (FIRST) {
        c_prev = c0[row + j];
        hp[j] = h0[row + j];
      } else {
        const int prev = bits_prev[row + j];
        c_prev = (prev & BIT_C) ? 1 : 0;
        hp[j] = ((prev & BIT_C) && (prev & BIT_O)) ? 1 : 0;
      }
      const scalar_t dh = grad_h[row + j] + dh_rec[row + j];
      scalar_t dc = o * dh;
      if constexpr (LAST) {
        dc += grad_c_last[row + j];
      } else {
        dc += ((bits_next[row + j] & BIT_F) ? scalar_t(1) : scalar_t(0)) * ds[row + j];
      }
      if constexpr (CELL_SURROGATE) {
        const scalar_t s = f * c_prev + i * g;  // 0, 1 or 2
        dc *= s < scalar_t(0.5) ? cs0 : (s < scalar_t(1.5) ? cs1 : cs2);
      }
      ds[row + j] = dc;
      d[j] *= dc * g;
      d[hidden + j] *= dc * c_prev;
      d[2 * hidden + j] *= dc * i;
      d[3 * hidden + j] *= dh * cell;
    }
  }
}

// Whether few enough units fire for add_spike_rows to beat a dense product. A dense
// product loads each weight once for the whole batch, the spike rows once per batch row
// that needs it; measured here (AVX-512, 2 threads, H = 128 and 256) the spike rows
// win below a firing fraction of about 1.0 at batch 1, 0.5 at 8, 0.33 at 32 and 0.22
// at 128: 0.15 + 0.85 / sqrt(batch) follows that.
template <typename scalar_t>
bool sparse_enough(const scalar_t* __restrict__ h, int64_t batch, int64_t hidden) {
  int64_t firing = 0;
  for (int64_t k = 0; k < batch * hidden; ++k) firing += h[k] != 0;
  return firing <= batch * hidden * (0.15 + 0.85 / std::sqrt(static_cast<double>(batch)));
}

// a[b, :] += h[b, :] W_hh^T for rows b in [first, end) and binary h: the sum of the
// rows of w_t = W_hh^T [H, 4H] of the units that spiked, so the work falls with the
// firing rate. (Summing a block of columns in registers over all the units that
// spiked measured 4x slower than this with GCC 12: the block stayed in memory.)
template <typename scalar_t>
void add_spike_rows(scalar_t* __restrict__ a, const scalar_t* __restrict__ h, const scalar_t* __restrict__ w_t,
                    int64_t first, int64_t end, int64_t hidden) {
  const int64_t width = 4 * hidden;
  for (int64_t b = first; b < end; ++b) {
    scalar_t* __restrict__ row = a + b * width;
    for (int64_t k = 0; k < hidden; ++k) {
      if (h[b * hidden + k] == 0) continue;
      const scalar_t* __restrict__ w = w_t + k * width;
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) row[j] += w[j];
    }
  }
}

template <typename scalar_t, bool CELL_SURROGATE>
void backward_steps(torch::Tensor& sur, torch::Tensor& bits, torch::Tensor& grad_h, torch::Tensor& grad_c_last,
                    torch::Tensor& h0, torch::Tensor& c0, torch::Tensor& w_hh, torch::Tensor& ds,
                    torch::Tensor& dh_rec, torch::Tensor& xh, int64_t input_size, const scalar_t* cs) {
  const int64_t steps = sur.size(0), batch = sur.size(1), hidden = sur.size(2) / 4;
  const int64_t stride = batch * hidden, xh_row = xh.size(2);
  const uint8_t* bits_ptr = bits.data_ptr<uint8_t>();
  scalar_t* sur_ptr = sur.data_ptr<scalar_t>();
  const scalar_t* gh = grad_h.data_ptr<scalar_t>();
  const scalar_t* gc = grad_c_last.data_ptr<scalar_t>();
  const scalar_t* c0p = c0.data_ptr<scalar_t>();
  const scalar_t* h0p = h0.data_ptr<scalar_t>();
  scalar_t* hp = xh.data_ptr<scalar_t>() + input_size;
  scalar_t* dsp = ds.data_ptr<scalar_t>();
  scalar_t* dhr = dh_rec.data_ptr<scalar_t>();
  // w_hh in a narrower dtype (bfloat16): products in that dtype, results back in scalar_t
  const bool mixed = w_hh.scalar_type() != sur.scalar_type();
  for (int64_t t = steps - 1; t >= 0; --t) {
    const uint8_t* here = bits_ptr + t * stride;
    const uint8_t* next = bits_ptr + (t + 1) * stride;  // not read at the last step
    const uint8_t* prev = bits_ptr + (t - 1) * stride;  // not read at the first step
    scalar_t* d = sur_ptr + t * 4 * stride;
    const scalar_t* g = gh + t * stride;
    scalar_t* h = hp + t * batch * xh_row;
    const bool first = t == 0, last = t == steps - 1;
#define SNNLSTM_STEP(F, L) \
  step_backward<scalar_t, F, L, CELL_SURROGATE>(d, here, next, prev, c0p, h0p, g, dhr, gc, dsp, h, xh_row, batch, hidden, cs)
    if (first && last) SNNLSTM_STEP(true, true);
    else if (first) SNNLSTM_STEP(true, false);
    else if (last) SNNLSTM_STEP(false, true);
    else SNNLSTM_STEP(false, false);
#undef SNNLSTM_STEP
    if (mixed) {
      dh_rec.copy_(torch::mm(sur[t].to(w_hh.scalar_type()), w_hh));
    } else {
      torch::mm_out(dh_rec, sur[t], w_hh);
    }
  }
}


// ---------------------------------------------------------------- analog cell
// The cell variants whose c is a real number in [0, 1] (lstm.py, CELLS); i, g, o and h stay spikes:
//   phi_t = lambda f_t     (leaky: f a spike, lambda in (0, 1) per unit)
//         = sigma(a_f)     (graded_forget)
//   s_t = phi_t c_{t-1} + w i_t g_t,   c_t = min(s_t, 1),   h_t = o_t H(c_t - theta1)
// A step writes c_t, phi_t and og_t = o_t g'(c_t - theta1) (dh_t/dc_t) beside the bits, whose c
// bit is H(c_t - theta1), and, for the backward, dphi_t/da_f in place of the forget gate's surrogate.
template <typename scalar_t, int FAMILY, bool GRADED_FORGET, bool SURROGATES>
void step_forward_analog(scalar_t* __restrict__ a, const scalar_t* __restrict__ c_prev, scalar_t* __restrict__ h,
                         scalar_t* __restrict__ c, scalar_t* __restrict__ phi_out, scalar_t* __restrict__ og_out,
                         uint8_t* __restrict__ bits, const scalar_t* __restrict__ lambda, int64_t first, int64_t end,
                         int64_t hidden, const Params& p) {
  const scalar_t th1 = p.theta1, th2 = p.theta2, w = p.write_scale;
  const Surrogate<scalar_t> gate(FAMILY, p.alpha1), candidate(FAMILY, p.alpha2);
  for (int64_t b = first; b < end; ++b) {
    scalar_t* __restrict__ ai = a + b * 4 * hidden;
    scalar_t* __restrict__ af = ai + hidden;
    scalar_t* __restrict__ ag = ai + 2 * hidden;
    scalar_t* __restrict__ ao = ai + 3 * hidden;
    const int64_t row = b * hidden;
#pragma omp simd
    for (int64_t j = 0; j < hidden; ++j) {
      const scalar_t ui = ai[j] - th1, uf = af[j] - th1, ug = ag[j] - th2, uo = ao[j] - th1;
      const int ib = ui > 0, gb = ug > 0, ob = uo > 0;
      const scalar_t i = scalar_t(ib), g = scalar_t(gb), o = scalar_t(ob);
      scalar_t phi, dphi;
      int fb;
      if constexpr (GRADED_FORGET) {
        phi = scalar_t(1) / (scalar_t(1) + exp_vec(-af[j]));
        dphi = phi * (scalar_t(1) - phi);
        fb = phi > scalar_t(0.5);  // the record's f bit: the gate keeps more than it drops
      } else {
        fb = uf > 0;
        phi = lambda[j] * scalar_t(fb);
        dphi = SURROGATES ? lambda[j] * gate.template at<FAMILY>(uf) : scalar_t(0);
      }
      const scalar_t s = phi * c_prev[row + j] + w * (i * g);
      const scalar_t cell = s < scalar_t(1) ? s : scalar_t(1);
      const scalar_t uc = cell - th1;
      const int cb = uc > 0;
      c[row + j] = cell;
      h[row + j] = o * scalar_t(cb);
      bits[row + j] = static_cast<uint8_t>(ib | (fb << 1) | (gb << 2) | (ob << 3) | (cb << 4));
      if constexpr (SURROGATES) {
        phi_out[row + j] = phi;
        og_out[row + j] = o * gate.template at<FAMILY>(uc);
        ai[j] = gate.template at<FAMILY>(ui);
        af[j] = dphi;
        ag[j] = candidate.template at<FAMILY>(ug);
        ao[j] = gate.template at<FAMILY>(uo);
      }
    }
  }
}

// One step backward of the analog cell:
//   dL/dh_t = (dL/dh_t from above) + da_{t+1} W_hh
//   dL/dc_t = og_t dL/dh_t + phi_{t+1} dL/ds_{t+1} (+ dL/dc_T at the last step)
//   dL/ds_t = dL/dc_t if s_t <= 1, else 0 (the clamp)
//   da = (w ds g, ds c_{t-1}, w ds i, dh H(c_t - theta1)) * (G_i, dphi/da_f, G_g, G_o), written over them
// with ds_t also kept in ds_seq (for dL/dlambda) and h_{t-1} filled into the [x, h_prev, 1] rows.
template <typename scalar_t, bool FIRST, bool LAST>
void step_backward_analog(scalar_t* __restrict__ sur_da, const uint8_t* __restrict__ bits,
                          const uint8_t* __restrict__ bits_prev, const scalar_t* __restrict__ c_prev,
                          const scalar_t* __restrict__ phi, const scalar_t* __restrict__ phi_next,
                          const scalar_t* __restrict__ og, const scalar_t* __restrict__ h0,
                          const scalar_t* __restrict__ grad_h, const scalar_t* __restrict__ dh_rec,
                          const scalar_t* __restrict__ grad_c_last, scalar_t* __restrict__ ds,
                          scalar_t* __restrict__ ds_seq, scalar_t* __restrict__ h_prev, int64_t h_prev_stride,
                          int64_t batch, int64_t hidden, scalar_t w) {
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t row = b * hidden;
    scalar_t* __restrict__ d = sur_da + 4 * row;
    scalar_t* __restrict__ hp = h_prev + b * h_prev_stride;
#pragma omp simd
    for (int64_t j = 0; j < hidden; ++j) {
      const int here = bits[row + j];
      const scalar_t i = (here & BIT_I) ? 1 : 0, g = (here & BIT_G) ? 1 : 0;
      const scalar_t fires = (here & BIT_C) ? 1 : 0;
      if constexpr (FIRST) {
        hp[j] = h0[row + j];
      } else {
        const int prev = bits_prev[row + j];
        hp[j] = ((prev & BIT_C) && (prev & BIT_O)) ? 1 : 0;
      }
      const scalar_t cp = c_prev[row + j];
      const scalar_t dh = grad_h[row + j] + dh_rec[row + j];
      scalar_t dc = og[row + j] * dh;
      if constexpr (LAST) {
        dc += grad_c_last[row + j];
      } else {
        dc += phi_next[row + j] * ds[row + j];
      }
      const scalar_t s = phi[row + j] * cp + w * (i * g);
      const scalar_t dsv = s <= scalar_t(1) ? dc : scalar_t(0);
      ds[row + j] = dsv;
      ds_seq[row + j] = dsv;
      d[j] *= w * dsv * g;
      d[hidden + j] *= dsv * cp;
      d[2 * hidden + j] *= w * dsv * i;
      d[3 * hidden + j] *= dh * fires;
    }
  }
}

}  // namespace

// pre: [T, B, 4H] input projections plus biases; w_rows: W_hh^T [H, 4H], contiguous (the
// weights a spike of each unit adds). Step by step, a_t = pre_t + h_{t-1} W_hh^T
// is formed in place, then replaced by its gate surrogates when `surrogates` is set.
// Returns (h [T, B, H], bits [T, B, H] uint8, c_T [B, H]).
std::vector<torch::Tensor> forward_loop(torch::Tensor pre, torch::Tensor w_rows, torch::Tensor h0, torch::Tensor c0,
                                        double theta1, double theta2, int64_t family, double alpha1, double alpha2,
                                        bool surrogates) {
  TORCH_CHECK(pre.is_contiguous() && pre.dim() == 3, "pre must be a contiguous [T, B, 4H] tensor");
  TORCH_CHECK(family >= 0 && family <= 4, "unknown surrogate family");
  const int64_t steps = pre.size(0), batch = pre.size(1), hidden = pre.size(2) / 4;
  auto h_seq = torch::empty({steps, batch, hidden}, pre.options());
  auto bits = torch::empty({steps, batch, hidden}, pre.options().dtype(torch::kUInt8));
  auto c_a = c0.contiguous().clone(), c_b = torch::empty_like(c_a);
  TORCH_CHECK(w_rows.is_contiguous(), "w_rows must be W_hh^T, contiguous");
  // weights in a narrower dtype (bfloat16): products in that dtype, results back in pre's
  const bool mixed = w_rows.scalar_type() != pre.scalar_type();
  torch::Tensor h = h0.contiguous();
  const Params p{theta1, theta2, alpha1, alpha2, static_cast<int>(family)};
  AT_DISPATCH_FLOATING_TYPES(pre.scalar_type(), "snnlstm_forward_loop", [&] {
    // raw pointers per step: a tensor view per step costs more than a batch-1 step itself
    scalar_t* const pre_p = pre.data_ptr<scalar_t>();
    scalar_t* const h_seq_p = h_seq.data_ptr<scalar_t>();
    uint8_t* const bits_p = bits.data_ptr<uint8_t>();
    const scalar_t* w_p = mixed ? nullptr : w_rows.data_ptr<scalar_t>();
    const scalar_t* h_prev = h.data_ptr<scalar_t>();
    const int64_t plane = batch * hidden;
    const auto as_tensor = [&](const scalar_t* values) {  // h_{t-1} for the dense products
      return torch::from_blob(const_cast<scalar_t*>(values), {batch, hidden}, pre.options());
    };
    for (int64_t t = 0; t < steps; ++t) {
      scalar_t* ap = pre_p + t * 4 * plane;
      const bool sparse = !mixed && sparse_enough(h_prev, batch, hidden);
      if (mixed) {
        pre[t].add_(torch::mm(as_tensor(h_prev).to(w_rows.scalar_type()), w_rows));
      } else if (!sparse) {
        pre[t].addmm_(as_tensor(h_prev), w_rows);
      }
      scalar_t* cp = c_a.data_ptr<scalar_t>();
      scalar_t* hp = h_seq_p + t * plane;
      scalar_t* cn = c_b.data_ptr<scalar_t>();
      uint8_t* bp = bits_p + t * plane;
      // batch rows are independent: the spike rows and the step of a chunk of them per thread
      at::parallel_for(0, batch, ROWS_PER_THREAD, [&](int64_t first, int64_t end) {
        if (sparse) add_spike_rows(ap, h_prev, w_p, first, end, hidden);
        if (!surrogates) {
          step_forward<scalar_t, GAUSSIAN, false>(ap, cp, hp, cn, bp, first, end, hidden, p);
          return;
        }
        switch (family) {
          case GAUSSIAN: step_forward<scalar_t, GAUSSIAN, true>(ap, cp, hp, cn, bp, first, end, hidden, p); break;
          case PIECEWISE_LINEAR: step_forward<scalar_t, PIECEWISE_LINEAR, true>(ap, cp, hp, cn, bp, first, end, hidden, p); break;
          case FAST_SIGMOID: step_forward<scalar_t, FAST_SIGMOID, true>(ap, cp, hp, cn, bp, first, end, hidden, p); break;
          case ATAN: step_forward<scalar_t, ATAN, true>(ap, cp, hp, cn, bp, first, end, hidden, p); break;
          default: step_forward<scalar_t, STRAIGHT_THROUGH, true>(ap, cp, hp, cn, bp, first, end, hidden, p); break;
        }
      });
      std::swap(c_a, c_b);
      h_prev = hp;
    }
  });
  return {h_seq, bits, c_a};
}

// Reverse-time loop. sur: [T, B, 4H] gate surrogates, overwritten with da; grad_h:
// [T, B, H] dL/dh_t from above; grad_c_last: [B, H] dL/dc_T; xh: [T, B, I + H + 1]
// rows [x_t, h_{t-1}, 1] whose h columns this fills; cell_sur: g'(s - theta1) for
// s = 0, 1, 2. Returns (dL/dh_0, dL/dc_0).
std::vector<torch::Tensor> backward_loop(torch::Tensor sur, torch::Tensor bits, torch::Tensor grad_h,
                                         torch::Tensor grad_c_last, torch::Tensor h0, torch::Tensor c0,
                                         torch::Tensor w_hh, torch::Tensor xh, int64_t input_size,
                                         bool cell_surrogate, std::vector<double> cell_sur) {
  TORCH_CHECK(sur.is_contiguous() && bits.is_contiguous() && xh.is_contiguous(), "tensors must be contiguous");
  const int64_t batch = sur.size(1), hidden = sur.size(2) / 4;
  TORCH_CHECK(xh.size(2) == input_size + hidden + 1, "xh must be [T, B, I + H + 1]");
  auto ds = torch::zeros({batch, hidden}, sur.options());
  auto dh_rec = torch::zeros({batch, hidden}, sur.options());
  auto h0c = h0.contiguous(), c0c = c0.contiguous();
  auto grad_hc = grad_h.contiguous();
  auto grad_cc = grad_c_last.contiguous();
  AT_DISPATCH_FLOATING_TYPES(sur.scalar_type(), "snnlstm_backward_loop", [&] {
    const scalar_t cs[3] = {scalar_t(cell_sur[0]), scalar_t(cell_sur[1]), scalar_t(cell_sur[2])};
    if (cell_surrogate) {
      backward_steps<scalar_t, true>(sur, bits, grad_hc, grad_cc, h0c, c0c, w_hh, ds, dh_rec, xh, input_size, cs);
    } else {
      backward_steps<scalar_t, false>(sur, bits, grad_hc, grad_cc, h0c, c0c, w_hh, ds, dh_rec, xh, input_size, cs);
    }
  });
  // dL/dc_0 = f_0 dL/ds_0: ds holds dL/ds at t = 0 and bits[0] its forget gate
  auto f0 = bits[0].bitwise_and(BIT_F).gt(0).to(sur.scalar_type());
  return {dh_rec, f0 * ds};
}


// ---------------------------------------------------------------- analog cell loops
namespace {

template <typename scalar_t>
void forward_steps_analog(torch::Tensor& pre, const torch::Tensor& w_rows, const torch::Tensor& h0,
                          const torch::Tensor& c0, const torch::Tensor& lambda, torch::Tensor& h_seq,
                          torch::Tensor& bits, torch::Tensor& c_seq, torch::Tensor& phi_seq, torch::Tensor& og_seq,
                          const Params& p, bool graded_forget, bool surrogates) {
  const int64_t steps = pre.size(0), batch = pre.size(1), hidden = pre.size(2) / 4;
  scalar_t* const pre_p = pre.data_ptr<scalar_t>();
  scalar_t* const h_seq_p = h_seq.data_ptr<scalar_t>();
  uint8_t* const bits_p = bits.data_ptr<uint8_t>();
  scalar_t* const c_p = c_seq.data_ptr<scalar_t>();
  scalar_t* const phi_p = surrogates ? phi_seq.data_ptr<scalar_t>() : nullptr;
  scalar_t* const og_p = surrogates ? og_seq.data_ptr<scalar_t>() : nullptr;
  const scalar_t* w_p = w_rows.data_ptr<scalar_t>();
  const scalar_t* lam_p = lambda.numel() ? lambda.data_ptr<scalar_t>() : nullptr;
  const scalar_t* h_prev = h0.data_ptr<scalar_t>();
  const scalar_t* c_prev = c0.data_ptr<scalar_t>();
  const int64_t plane = batch * hidden;
  for (int64_t t = 0; t < steps; ++t) {
    scalar_t* ap = pre_p + t * 4 * plane;
    const bool sparse = sparse_enough(h_prev, batch, hidden);
    if (!sparse) {
      pre[t].addmm_(torch::from_blob(const_cast<scalar_t*>(h_prev), {batch, hidden}, pre.options()), w_rows);
    }
    scalar_t* cn = c_p + (surrogates ? t : t % 2) * plane;
    scalar_t* hp = h_seq_p + t * plane;
    scalar_t* phip = surrogates ? phi_p + t * plane : nullptr;
    scalar_t* ogp = surrogates ? og_p + t * plane : nullptr;
    uint8_t* bp = bits_p + t * plane;
    at::parallel_for(0, batch, ROWS_PER_THREAD, [&](int64_t first, int64_t end) {
      if (sparse) add_spike_rows(ap, h_prev, w_p, first, end, hidden);
#define SNNLSTM_ANALOG(FAM, GRADED, SUR) \
  step_forward_analog<scalar_t, FAM, GRADED, SUR>(ap, c_prev, hp, cn, phip, ogp, bp, lam_p, first, end, hidden, p)
      if (!surrogates) {
        if (graded_forget) SNNLSTM_ANALOG(GAUSSIAN, true, false);
        else SNNLSTM_ANALOG(GAUSSIAN, false, false);
        return;
      }
      switch (p.family * 2 + (graded_forget ? 1 : 0)) {
        case GAUSSIAN * 2: SNNLSTM_ANALOG(GAUSSIAN, false, true); break;
        case GAUSSIAN * 2 + 1: SNNLSTM_ANALOG(GAUSSIAN, true, true); break;
        case PIECEWISE_LINEAR * 2: SNNLSTM_ANALOG(PIECEWISE_LINEAR, false, true); break;
        case PIECEWISE_LINEAR * 2 + 1: SNNLSTM_ANALOG(PIECEWISE_LINEAR, true, true); break;
        case FAST_SIGMOID * 2: SNNLSTM_ANALOG(FAST_SIGMOID, false, true); break;
        case FAST_SIGMOID * 2 + 1: SNNLSTM_ANALOG(FAST_SIGMOID, true, true); break;
        case ATAN * 2: SNNLSTM_ANALOG(ATAN, false, true); break;
        case ATAN * 2 + 1: SNNLSTM_ANALOG(ATAN, true, true); break;
        case STRAIGHT_THROUGH * 2: SNNLSTM_ANALOG(STRAIGHT_THROUGH, false, true); break;
        default: SNNLSTM_ANALOG(STRAIGHT_THROUGH, true, true); break;
      }
#undef SNNLSTM_ANALOG
    });
    c_prev = cn;
    h_prev = hp;
  }
}

template <typename scalar_t>
void backward_steps_analog(torch::Tensor& sur, const torch::Tensor& bits, const torch::Tensor& c_seq,
                           const torch::Tensor& phi_seq, const torch::Tensor& og_seq, const torch::Tensor& grad_h,
                           const torch::Tensor& grad_c_last, const torch::Tensor& h0, const torch::Tensor& c0,
                           const torch::Tensor& w_hh, torch::Tensor& xh, int64_t input_size, torch::Tensor& ds,
                           torch::Tensor& ds_seq, torch::Tensor& dh_rec, double write_scale) {
  const int64_t steps = sur.size(0), batch = sur.size(1), hidden = sur.size(2) / 4;
  const int64_t stride = batch * hidden, xh_row = xh.size(2);
  const uint8_t* bits_p = bits.data_ptr<uint8_t>();
  scalar_t* sur_p = sur.data_ptr<scalar_t>();
  const scalar_t* c_p = c_seq.data_ptr<scalar_t>();
  const scalar_t* phi_p = phi_seq.data_ptr<scalar_t>();
  const scalar_t* og_p = og_seq.data_ptr<scalar_t>();
  const scalar_t* gh = grad_h.data_ptr<scalar_t>();
  const scalar_t* gc = grad_c_last.data_ptr<scalar_t>();
  const scalar_t* h0p = h0.data_ptr<scalar_t>();
  const scalar_t* c0p = c0.data_ptr<scalar_t>();
  scalar_t* hp = xh.data_ptr<scalar_t>() + input_size;
  scalar_t* dsp = ds.data_ptr<scalar_t>();
  scalar_t* dss = ds_seq.data_ptr<scalar_t>();
  scalar_t* dhr = dh_rec.data_ptr<scalar_t>();
  for (int64_t t = steps - 1; t >= 0; --t) {
    const uint8_t* here = bits_p + t * stride;
    const uint8_t* prev = bits_p + (t - 1) * stride;  // not read at the first step
    const scalar_t* c_prev = t == 0 ? c0p : c_p + (t - 1) * stride;
    const scalar_t* phi_next = phi_p + (t + 1) * stride;  // not read at the last step
    scalar_t* d = sur_p + t * 4 * stride;
    scalar_t* h = hp + t * batch * xh_row;
    const bool first = t == 0, last = t == steps - 1;
#define SNNLSTM_STEP(F, L)                                                                                          \
  step_backward_analog<scalar_t, F, L>(d, here, prev, c_prev, phi_p + t * stride, phi_next, og_p + t * stride, h0p, \
                                       gh + t * stride, dhr, gc, dsp, dss + t * stride, h, xh_row, batch, hidden, \
                                       scalar_t(write_scale))
    if (first && last) SNNLSTM_STEP(true, true);
    else if (first) SNNLSTM_STEP(true, false);
    else if (last) SNNLSTM_STEP(false, true);
    else SNNLSTM_STEP(false, false);
#undef SNNLSTM_STEP
    torch::mm_out(dh_rec, sur[t], w_hh);
  }
}

}  // namespace

// The analog cell's forward loop (step_forward_analog): as forward_loop, with lambda [H] the leaky
// cell's per-unit decay (empty for graded_forget) and write_scale w what a write adds. Returns (h [T, B, H], bits, c_T, and with
// `surrogates` c [T, B, H], phi [T, B, H] and og [T, B, H] for the backward, else empty tensors).
std::vector<torch::Tensor> forward_loop_analog(torch::Tensor pre, torch::Tensor w_rows, torch::Tensor h0,
                                               torch::Tensor c0, torch::Tensor lambda, double theta1, double theta2,
                                               int64_t family, double alpha1, double alpha2, double write_scale,
                                               bool graded_forget, bool surrogates) {
  TORCH_CHECK(pre.is_contiguous() && pre.dim() == 3, "pre must be a contiguous [T, B, 4H] tensor");
  TORCH_CHECK(family >= 0 && family <= 4, "unknown surrogate family");
  TORCH_CHECK(w_rows.is_contiguous() && w_rows.scalar_type() == pre.scalar_type(),
              "w_rows must be W_hh^T, contiguous, in the dtype of pre");
  const int64_t steps = pre.size(0), batch = pre.size(1), hidden = pre.size(2) / 4;
  TORCH_CHECK(graded_forget || lambda.numel() == hidden, "the leaky cell needs lambda [H]");
  auto h_seq = torch::empty({steps, batch, hidden}, pre.options());
  auto bits = torch::empty({steps, batch, hidden}, pre.options().dtype(torch::kUInt8));
  // without surrogates only the running c is kept: two planes used in turn
  auto c_seq = torch::empty({surrogates ? steps : 2, batch, hidden}, pre.options());
  auto phi_seq = torch::empty({surrogates ? steps : 0, batch, hidden}, pre.options());
  auto og_seq = torch::empty({surrogates ? steps : 0, batch, hidden}, pre.options());
  auto lam = lambda.contiguous();
  auto h_start = h0.contiguous(), c_start = c0.contiguous();
  const Params p{theta1, theta2, alpha1, alpha2, static_cast<int>(family), write_scale};
  AT_DISPATCH_FLOATING_TYPES(pre.scalar_type(), "snnlstm_forward_loop_analog", [&] {
    forward_steps_analog<scalar_t>(pre, w_rows, h_start, c_start, lam, h_seq, bits, c_seq, phi_seq, og_seq, p,
                                   graded_forget, surrogates);
  });
  auto c_last = surrogates ? c_seq[steps - 1] : c_seq[(steps - 1) % 2].clone();
  return {h_seq, bits, c_last, c_seq, phi_seq, og_seq};
}

// The analog cell's reverse-time loop. sur: [T, B, 4H] (G_i, dphi/da_f, G_g, G_o), overwritten
// with da; c_seq, phi_seq, og_seq: the forward's; xh: the [x_t, h_{t-1}, 1] rows whose h columns
// this fills; write_scale: the forward's. Returns (dL/dh_0, dL/dc_0, ds [T, B, H]).
std::vector<torch::Tensor> backward_loop_analog(torch::Tensor sur, torch::Tensor bits, torch::Tensor c_seq,
                                                torch::Tensor phi_seq, torch::Tensor og_seq, torch::Tensor grad_h,
                                                torch::Tensor grad_c_last, torch::Tensor h0, torch::Tensor c0,
                                                torch::Tensor w_hh, torch::Tensor xh, int64_t input_size,
                                                double write_scale) {
  TORCH_CHECK(w_hh.scalar_type() == sur.scalar_type(), "w_hh must be in the dtype of sur (float32 products)");
  TORCH_CHECK(sur.is_contiguous() && bits.is_contiguous() && xh.is_contiguous() && c_seq.is_contiguous() &&
              phi_seq.is_contiguous() && og_seq.is_contiguous(), "tensors must be contiguous");
  const int64_t steps = sur.size(0), batch = sur.size(1), hidden = sur.size(2) / 4;
  TORCH_CHECK(xh.size(2) == input_size + hidden + 1, "xh must be [T, B, I + H + 1]");
  auto ds = torch::zeros({batch, hidden}, sur.options());
  auto ds_seq = torch::empty({steps, batch, hidden}, sur.options());
  auto dh_rec = torch::zeros({batch, hidden}, sur.options());
  auto h0c = h0.contiguous(), c0c = c0.contiguous(), grad_hc = grad_h.contiguous(), grad_cc = grad_c_last.contiguous();
  AT_DISPATCH_FLOATING_TYPES(sur.scalar_type(), "snnlstm_backward_loop_analog", [&] {
    backward_steps_analog<scalar_t>(sur, bits, c_seq, phi_seq, og_seq, grad_hc, grad_cc, h0c, c0c, w_hh, xh,
                                    input_size, ds, ds_seq, dh_rec, write_scale);
  });
  // dL/dc_0 = phi_0 dL/ds_0
  return {dh_rec, phi_seq[0] * ds, ds_seq};
}

// The loops run for the whole sequence touching no Python object: other Python
// threads (data loading, a tracker's upload) run meanwhile.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward_loop", &forward_loop, "spiking LSTM layer: forward time loop",
        pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("backward_loop", &backward_loop, "spiking LSTM layer: backward time loop",
        pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("forward_loop_analog", &forward_loop_analog, "spiking LSTM layer with an analog cell: forward time loop",
        pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("backward_loop_analog", &backward_loop_analog, "spiking LSTM layer with an analog cell: backward time loop",
        pybind11::call_guard<pybind11::gil_scoped_release>());
}
