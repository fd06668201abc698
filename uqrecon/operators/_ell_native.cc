// Native CPU kernel of uqrecon's sliced-ELL sparse product (uqrecon/operators/_ell.py):
// Y = X A^T for a batch of vectors X (B, n) and A (m, n) stored as sliced ELL tables, in
// float32. Built on first use by uqrecon/operators/_ell_native.py and called through
// JAX's FFI (jax.ffi.ffi_call), so XLA's CPU runtime runs it like any other op.
//
// Why not XLA's gather: XLA materialises a gather before reducing it, so every stored
// entry costs a gather write and a reduction read besides the table read, and a batch of
// vectors reads the table once per vector. Here every row is reduced in registers and
// each table entry is applied to the whole batch at once, the batch stored
// interleaved ((n, B), so one index reads B neighbouring floats).
//
// Operands: x (..., n) float32 (leading dimensions flattened into the batch), then the
// S index slices (..., rows_s, width_s) int32, the S weight slices (same shapes) float32,
// and rows (..., m) int32: the matrix row of each stored row (read only when S > 1).
// Attributes: num_slices (S) and min_unit (entries per work unit, at least).
// Result: (..., m) float32.
//
// Threads: the rows are cut into units of about entries / (8 * threads) entries; the
// calling thread and up to threads - 1 tasks on XLA's intra-op thread pool claim units
// from an atomic counter. The caller claims until none is left and then waits only for
// units that others claimed, so it never waits on a task that has not started (no
// deadlock when the pool is busy); a task that starts late finds nothing to claim.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Slice {
  const int32_t* idx;
  const float* val;
  int64_t rows, width, offset;
};

struct Work {
  const float* xt = nullptr;  // (n, batch) interleaved
  float* y = nullptr;         // (batch, m)
  const int32_t* order = nullptr;
  bool permute = false;
  int64_t batch = 1, m = 0;
  std::vector<Slice> slices;
  std::vector<std::pair<int64_t, int64_t>> units;  // (slice, first row)
  std::vector<int64_t> unit_rows;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
};

// One unit of rows; B > 0: a batch size known at compile time (unrolled), B == 0: any.
template <int B>
void run_unit_batch(const Work& w, int64_t u) {
  const int64_t nb = B > 0 ? B : w.batch;
  float fixed[B > 0 ? B : 1];
  std::vector<float> dynamic(B > 0 ? 0 : nb);
  float* acc = B > 0 ? fixed : dynamic.data();
  const Slice& s = w.slices[w.units[u].first];
  const int64_t lo = w.units[u].second, hi = lo + w.unit_rows[u];
  for (int64_t r = lo; r < hi; ++r) {
    const int32_t* ir = s.idx + r * s.width;
    const float* vr = s.val + r * s.width;
    std::fill(acc, acc + nb, 0.f);
    for (int64_t k = 0; k < s.width; ++k) {
      const float v = vr[k];
      const float* xr = w.xt + static_cast<int64_t>(ir[k]) * nb;
      for (int64_t b = 0; b < nb; ++b) acc[b] += v * xr[b];
    }
    const int64_t row = w.permute ? w.order[s.offset + r] : s.offset + r;
    for (int64_t b = 0; b < nb; ++b) w.y[b * w.m + row] = acc[b];
  }
}

void run_unit(const Work& w, int64_t u) {
  switch (w.batch) {
    case 1: return run_unit_batch<1>(w, u);
    case 2: return run_unit_batch<2>(w, u);
    case 4: return run_unit_batch<4>(w, u);
    case 8: return run_unit_batch<8>(w, u);
    default: return run_unit_batch<0>(w, u);
  }
}

void drain(Work& w) {
  const int64_t total = static_cast<int64_t>(w.units.size());
  for (int64_t u; (u = w.next.fetch_add(1)) < total;) {
    run_unit(w, u);
    w.done.fetch_add(1, std::memory_order_release);
  }
}

}  // namespace

static ffi::Error EllMatmat(ffi::Buffer<ffi::F32> x, ffi::RemainingArgs rest,
                            ffi::ResultBuffer<ffi::F32> y, int64_t num_slices,
                            int64_t min_unit, ffi::ThreadPool pool) {
  if (num_slices < 1 || rest.size() != static_cast<size_t>(2 * num_slices + 1))
    return ffi::Error::InvalidArgument("uqrecon_ell_matmat: expected 2 * num_slices + 1 tables");
  auto w = std::make_shared<Work>();
  const auto xd = x.dimensions();
  const int64_t n = xd.size() ? xd[xd.size() - 1] : 1;
  const auto yd = y->dimensions();
  w->m = yd.size() ? yd[yd.size() - 1] : 1;
  const int64_t batch = w->m ? static_cast<int64_t>(y->element_count()) / w->m : 0;
  w->batch = batch;
  if (batch == 0 || w->m == 0) return ffi::Error::Success();
  if (n == 0) {  // no columns: every product is zero (and the padding index 0 is unreadable)
    std::fill(y->typed_data(), y->typed_data() + batch * w->m, 0.f);
    return ffi::Error::Success();
  }
  if (static_cast<int64_t>(x.element_count()) != batch * n)
    return ffi::Error::InvalidArgument("uqrecon_ell_matmat: x and y hold different batches");
  std::vector<float> xt;  // the batch interleaved; lives until every unit is done
  if (batch == 1) {
    w->xt = x.typed_data();
  } else {
    xt.resize(static_cast<size_t>(n * batch));
    const float* xs = x.typed_data();
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t i = 0; i < n; ++i) xt[i * batch + b] = xs[b * n + i];
    w->xt = xt.data();
  }
  w->y = y->typed_data();
  int64_t offset = 0, entries = 0;
  for (int64_t s = 0; s < num_slices; ++s) {
    auto idx = rest.get<ffi::AnyBuffer>(s);
    auto val = rest.get<ffi::AnyBuffer>(num_slices + s);
    if (!idx.has_value() || !val.has_value())
      return ffi::Error::InvalidArgument("uqrecon_ell_matmat: cannot read a table slice");
    if (idx->element_type() != ffi::DataType::S32 || val->element_type() != ffi::DataType::F32)
      return ffi::Error::InvalidArgument("uqrecon_ell_matmat: tables must be int32 / float32");
    const auto d = idx->dimensions();
    if (d.size() < 2 || idx->element_count() != val->element_count())
      return ffi::Error::InvalidArgument("uqrecon_ell_matmat: index and weight slices differ");
    const int64_t rows = d[d.size() - 2], width = d[d.size() - 1];
    w->slices.push_back(Slice{static_cast<const int32_t*>(idx->untyped_data()),
                              static_cast<const float*>(val->untyped_data()), rows, width,
                              offset});
    offset += rows;
    entries += rows * width;
  }
  if (offset != w->m) return ffi::Error::InvalidArgument("uqrecon_ell_matmat: row count");
  auto rows = rest.get<ffi::AnyBuffer>(2 * num_slices);
  if (!rows.has_value() || rows->element_type() != ffi::DataType::S32 ||
      static_cast<int64_t>(rows->element_count()) != w->m)
    return ffi::Error::InvalidArgument("uqrecon_ell_matmat: rows must be m int32 entries");
  w->order = static_cast<const int32_t*>(rows->untyped_data());
  w->permute = num_slices > 1;

  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t unit = std::max<int64_t>(min_unit, entries / (8 * threads) + 1);
  for (int64_t s = 0; s < num_slices; ++s) {
    const Slice& sl = w->slices[s];
    const int64_t step = std::max<int64_t>(1, unit / std::max<int64_t>(1, sl.width));
    for (int64_t r = 0; r < sl.rows; r += step) {
      w->units.emplace_back(s, r);
      w->unit_rows.push_back(std::min(step, sl.rows - r));
    }
  }
  const int64_t total = static_cast<int64_t>(w->units.size());
  const int64_t helpers = std::min<int64_t>(threads - 1, total - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([w] { drain(*w); });
  drain(*w);
  while (w->done.load(std::memory_order_acquire) < total) std::this_thread::yield();
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(uqrecon_ell_matmat_f32, EllMatmat,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("num_slices")
                                  .Attr<int64_t>("min_unit")
                                  .Ctx<ffi::ThreadPool>());
