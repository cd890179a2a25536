// lost_sales_dp: relative value iteration for the exact lost-sales optimum (dp.h), CPU only.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "dp.h"

namespace deepstock {
namespace {

constexpr const char* kOp = "deepstock.lost_sales_dp: ";
constexpr int64_t kMaxStates = int64_t(1) << 28;
constexpr double kMaxInitialValue = 1e100;

// Odoni's bounds within the tolerance; never for non-finite or crossed bounds.
bool converged(double lower, double upper, double tolerance) {
  return std::isfinite(lower) && std::isfinite(upper) && upper - lower <= tolerance;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lost_sales_dp(
    const at::Tensor& demand_pmf, int64_t lead_time, double holding_cost, double penalty_cost,
    double order_cost, int64_t max_position, double tolerance, int64_t max_iterations,
    const std::optional<at::Tensor>& initial_value, int64_t review_period) {
  TORCH_CHECK(demand_pmf.defined(), kOp, "demand_pmf is required");
  TORCH_CHECK(demand_pmf.dim() == 1 && demand_pmf.numel() >= 1, kOp,
              "demand_pmf must be a non-empty 1-D tensor, got shape ", demand_pmf.sizes());
  TORCH_CHECK(demand_pmf.scalar_type() == at::kDouble && demand_pmf.device().is_cpu(), kOp,
              "demand_pmf must be a float64 CPU tensor, got ", demand_pmf.scalar_type(), " on ",
              demand_pmf.device());
  const at::Tensor pmf = demand_pmf.contiguous();
  const double* p = pmf.const_data_ptr<double>();
  double mass = 0.0;
  for (int64_t d = 0; d < pmf.numel(); ++d) {
    TORCH_CHECK(p[d] >= 0.0 && std::isfinite(p[d]), kOp,
                "demand_pmf must be non-negative and finite; entry ", d, " is ", p[d]);
    mass += p[d];
  }
  TORCH_CHECK(std::abs(mass - 1.0) < 1e-9, kOp, "demand_pmf must sum to 1, sums to ", mass);
  TORCH_CHECK(lead_time >= 1 && lead_time <= 16, kOp, "lead_time must lie in 1..16, got ",
              lead_time);
  TORCH_CHECK(max_position >= 1, kOp, "max_position must be >= 1, got ", max_position);
  TORCH_CHECK(review_period >= 1 && review_period <= 365, kOp,
              "review_period must lie in 1..365, got ", review_period);
  for (const auto& [name, v] : {std::pair{"holding_cost", holding_cost},
                                {"penalty_cost", penalty_cost}, {"order_cost", order_cost}})
    TORCH_CHECK(v >= 0.0 && std::isfinite(v), kOp, name, " must be non-negative and finite, got ",
                v);
  TORCH_CHECK(tolerance > 0.0, kOp, "tolerance must be > 0, got ", tolerance);
  TORCH_CHECK(max_iterations >= 1, kOp, "max_iterations must be >= 1, got ", max_iterations);
  double states = 1.0;
  for (int64_t i = 0; i < lead_time; ++i) states *= double(max_position + 1);
  TORCH_CHECK(states <= double(kMaxStates), kOp, "(max_position + 1)^lead_time = ", states,
              " states exceed the limit of ", kMaxStates,
              "; lower max_position (it bounds the inventory position)");
  const int64_t n = static_cast<int64_t>(states);

  std::vector<int64_t> shape(lead_time, max_position + 1);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  at::Tensor value;
  if (initial_value.has_value() && initial_value->defined()) {
    const at::Tensor& v0 = *initial_value;
    TORCH_CHECK(v0.device() == demand_pmf.device(), kOp, "initial_value is on ", v0.device(),
                " but demand_pmf is on ", demand_pmf.device());
    TORCH_CHECK(v0.scalar_type() == at::kFloat || v0.scalar_type() == at::kDouble, kOp,
                "initial_value must be float32 or float64, got ", v0.scalar_type());
    TORCH_CHECK(v0.sizes() == at::IntArrayRef(shape), kOp, "initial_value must have shape ",
                at::IntArrayRef(shape), ", got ", v0.sizes());
    value = v0.to(at::kDouble).contiguous().clone();
    // Relative values of a previous solve. Beyond this size the backups' sums lose the costs
    // (or overflow) and the bounds mean nothing.
    const double* v = value.const_data_ptr<double>();
    for (int64_t i = 0; i < value.numel(); ++i)
      TORCH_CHECK(std::isfinite(v[i]) && std::abs(v[i]) <= kMaxInitialValue, kOp,
                  "initial_value must be finite with magnitude <= ", kMaxInitialValue,
                  "; entry ", i, " is ", v[i]);
  } else {
    value = at::zeros(shape, f64);
  }
  at::Tensor next = at::empty(shape, f64);
  at::Tensor policy = at::full(shape, -1, at::TensorOptions().dtype(at::kLong));

  // Period cost of holding y units after arrival, before demand.
  std::vector<double> cost_of_stock(max_position + 1);
  for (int64_t y = 0; y <= max_position; ++y) {
    double c = 0.0;
    for (int64_t d = 0; d < pmf.numel(); ++d)
      c += p[d] * (d < y ? holding_cost * (y - d) : penalty_cost * (d - y));
    cost_of_stock[y] = c;
  }
  const LostSalesDP dp{p, pmf.numel(), lead_time, review_period, max_position, order_cost,
                       cost_of_stock.data()};

  // Only states with inventory position <= M are reachable; visit just those.
  std::vector<int64_t> states_in_use;
  {
    int64_t parts[64];
    for (int64_t s = 0; s < n; ++s)
      if (dp.decode(s, parts) <= max_position) states_in_use.push_back(s);
  }
  const int64_t m = static_cast<int64_t>(states_in_use.size());
  const int64_t* in_use = states_in_use.data();

  double lower = -std::numeric_limits<double>::infinity();
  double upper = std::numeric_limits<double>::infinity();
  int64_t iteration = 0;
  double* V = value.mutable_data_ptr<double>();
  double* W = next.mutable_data_ptr<double>();
  int64_t* pol = policy.mutable_data_ptr<int64_t>();
  // The span is per epoch of P days; the tolerance is per day.
  while (iteration < max_iterations && !converged(lower, upper, tolerance * review_period)) {
    ++iteration;
    std::vector<double> lo(at::get_num_threads() + 1, std::numeric_limits<double>::infinity());
    std::vector<double> hi(lo.size(), -std::numeric_limits<double>::infinity());
    at::parallel_for(0, m, 256, [&](int64_t begin, int64_t end) {
      double l = std::numeric_limits<double>::infinity(), h = -l;
      for (int64_t i = begin; i < end; ++i) {
        const int64_t s = in_use[i];
        double best;
        int64_t order;
        dp.backup(s, V, &best, &order);
        W[s] = best;
        pol[s] = order;
        l = std::min(l, best - V[s]);
        h = std::max(h, best - V[s]);
      }
      const int t = at::get_thread_num();
      lo[t] = std::min(lo[t], l);
      hi[t] = std::max(hi[t], h);
    });
    // The span of V' - V brackets the optimal average cost per epoch (Odoni's bounds).
    lower = *std::min_element(lo.begin(), lo.end());
    upper = *std::max_element(hi.begin(), hi.end());
    TORCH_CHECK(std::isfinite(lower) && std::isfinite(upper), kOp,
                "the value iteration overflowed (bounds ", lower, ", ", upper,
                " per epoch): holding_cost, penalty_cost or order_cost too large for float64");
    const double offset = W[0];  // state 0 (empty system) is always valid
    at::parallel_for(0, m, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) V[in_use[i]] = W[in_use[i]] - offset;
    });
  }
  at::Tensor bounds = at::empty({2}, f64);
  // Reported per day.
  bounds.mutable_data_ptr<double>()[0] = lower / review_period;
  bounds.mutable_data_ptr<double>()[1] = upper / review_period;
  return {bounds, policy, value, at::full({}, iteration, at::TensorOptions().dtype(at::kLong))};
}

}  // namespace

TORCH_LIBRARY_IMPL(deepstock, CPU, m) { m.impl("lost_sales_dp", &lost_sales_dp); }
// Also the kernel of calls the dispatcher cannot place (demand_pmf=None and no initial_value, or
// a CUDA tensor), so that they meet the checks above and not a dispatcher error.
TORCH_LIBRARY_IMPL(deepstock, CompositeExplicitAutograd, m) {
  m.impl("lost_sales_dp", &lost_sales_dp);
}

}  // namespace deepstock
