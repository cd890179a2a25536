// Host side shared by the CPU and CUDA launchers: argument checks (shapes, dtypes, devices),
// output allocation and the per-environment views. Launchers add only the loop.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>

#include <string>
#include <tuple>

#include "deepstock/env_step.h"
#include "deepstock/inventory.h"
#include "deepstock/observation.h"
#include "deepstock/projection.h"
#include "deepstock/rollout.h"

namespace deepstock {

using at::Tensor;

// Raises one error naming every invalid argument flagged in `errors` (common.h bit flags).
void raise_input_errors(int errors, const char* op);

// Which loops the CPU ops run: "avx2" (AVX2 + FMA) or "baseline" (see ops_cpu.cpp).
const char* cpu_simd();

// Whether CUDA launchers synchronise to read the input-error flag (default on). With checks
// off, an environment with invalid inputs gets NaN outputs and no error is raised.
bool cuda_value_checks();
bool set_cuda_value_checks(bool enabled);

template <typename T>
UnitCosts<T> unit_costs(const Tensor& holding, const Tensor& penalty, const Tensor& ordering) {
  return {holding.const_data_ptr<T>(),    penalty.const_data_ptr<T>(),
          ordering.const_data_ptr<T>(),   holding.numel() == 1 ? 0 : 1,
          penalty.numel() == 1 ? 0 : 1,   ordering.numel() == 1 ? 0 : 1};
}

// ---- inventory_step ----------------------------------------------------------------------
struct StepArgs {
  Tensor on_hand, pipeline, lead_time, order, demand, holding_cost, penalty_cost, order_cost;
  bool lost_sales;
  int64_t batch, max_lead, days;
};

StepArgs check_step_args(const Tensor& on_hand, const Tensor& pipeline, const Tensor& lead_time,
                         const Tensor& order, const Tensor& demand, const Tensor& holding_cost,
                         const Tensor& penalty_cost, const Tensor& order_cost, bool lost_sales,
                         const char* op);

// inventory_step_backward's arguments: the forward's checks over all of them at once.
StepArgs check_step_backward_args(const Tensor& grad_next_on_hand,
                                  const Tensor& grad_next_pipeline, const Tensor& grad_cost,
                                  const Tensor& on_hand, const Tensor& pipeline,
                                  const Tensor& lead_time, const Tensor& order,
                                  const Tensor& demand, const Tensor& holding_cost,
                                  const Tensor& penalty_cost, const Tensor& order_cost,
                                  bool lost_sales, const char* op);

template <typename T, typename I, int kSlots = kRuntimeSize, int kDays = kRuntimeSize>
StepInputs<T, I, kSlots, kDays> step_inputs(const StepArgs& a) {
  StepInputs<T, I, kSlots, kDays> in;
  in.on_hand = a.on_hand.const_data_ptr<T>();
  in.pipeline = a.pipeline.const_data_ptr<T>();
  in.lead_time = a.lead_time.const_data_ptr<I>();
  in.order = a.order.const_data_ptr<T>();
  in.demand = a.demand.const_data_ptr<T>();
  in.costs = unit_costs<T>(a.holding_cost, a.penalty_cost, a.order_cost);
  in.demand_stride_b = a.demand.stride(0);
  in.demand_stride_d = a.demand.stride(1);
  in.max_lead = a.max_lead;
  in.days = a.days;
  in.lost_sales = a.lost_sales;
  return in;
}

struct StepOutputs {
  Tensor next_on_hand, next_pipeline, cost, stats;
  std::tuple<Tensor, Tensor, Tensor, Tensor> tuple() const {
    return {next_on_hand, next_pipeline, cost, stats};
  }
};
StepOutputs empty_step_outputs(const StepArgs& a);

template <typename T, typename I, int kSlots = kRuntimeSize, int kDays = kRuntimeSize>
StepView<T, I, kSlots, kDays> step_view(const StepArgs& a, StepOutputs& o) {
  return {step_inputs<T, I, kSlots, kDays>(a), o.next_on_hand.mutable_data_ptr<T>(),
          o.next_pipeline.mutable_data_ptr<T>(), o.cost.mutable_data_ptr<T>(),
          o.stats.mutable_data_ptr<T>()};
}

// The gradients' outputs of arguments that passed check_step_backward_args.
struct StepGrads {
  Tensor grad_next_on_hand, grad_next_pipeline, grad_cost;  // inputs, contiguous
  Tensor on_hand, pipeline, order, holding_cost, penalty_cost, order_cost;  // outputs
  std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> tuple() const {
    return {on_hand, pipeline, order, holding_cost, penalty_cost, order_cost};
  }
};
StepGrads make_step_grads(const StepArgs& a, const Tensor& grad_next_on_hand,
                          const Tensor& grad_next_pipeline, const Tensor& grad_cost);

template <typename T, typename I>
StepBackwardView<T, I> step_backward_view(const StepArgs& a, StepGrads& g) {
  return {step_inputs<T, I>(a),
          g.grad_next_on_hand.const_data_ptr<T>(),
          g.grad_next_pipeline.const_data_ptr<T>(),
          g.grad_cost.const_data_ptr<T>(),
          g.on_hand.mutable_data_ptr<T>(),
          g.pipeline.mutable_data_ptr<T>(),
          g.order.mutable_data_ptr<T>(),
          g.holding_cost.mutable_data_ptr<T>(),
          g.penalty_cost.mutable_data_ptr<T>(),
          g.order_cost.mutable_data_ptr<T>()};
}

// Calls f(slots, days) with Size<> constants: exact slots for one day per epoch (see
// dispatch_slots), run-time sizes for longer epochs.
template <typename F>
void dispatch_step_sizes(int64_t max_lead, int64_t days, F&& f) {
  if (days != 1) return f(Size<kRuntimeSize>{}, Size<kRuntimeSize>{});
  dispatch_slots(max_lead, [&](auto slots) { f(slots, Size<1>{}); });
}

// ---- projections -------------------------------------------------------------------------
// Which inputs a projection op takes (the others are undefined in ProjectionArgs).
struct ProjectionInputs {
  bool target, coeff, inventory_position;  // coeff: coeff and features
};

struct ProjectionArgs {
  Tensor target, coeff, features, inventory_position, max_order;
  int64_t batch = 0, num_features = 0;
};

ProjectionArgs check_projection_args(const Tensor& target, const Tensor& coeff,
                                     const Tensor& features, const Tensor& inventory_position,
                                     const Tensor& max_order, ProjectionInputs inputs,
                                     const char* op, const Tensor* grad_order = nullptr);

template <typename T>
ProjectionView<T> projection_view(const ProjectionArgs& a, Tensor& order) {
  ProjectionView<T> v;
  if (a.target.defined()) v.target = a.target.const_data_ptr<T>();
  if (a.coeff.defined()) {
    v.coeff = a.coeff.const_data_ptr<T>();
    v.features = a.features.const_data_ptr<T>();
  }
  if (a.inventory_position.defined())
    v.inventory_position = a.inventory_position.const_data_ptr<T>();
  v.max_order = a.max_order.const_data_ptr<T>();
  v.max_order_stride = a.max_order.numel() == 1 ? 0 : 1;
  v.num_features = a.num_features;
  if (order.defined()) v.order = order.mutable_data_ptr<T>();
  return v;
}

struct ProjectionGrads {
  Tensor grad_order;  // input, contiguous
  Tensor target, coeff, features, inventory_position;  // outputs for the inputs present
};
ProjectionGrads make_projection_grads(const ProjectionArgs& a, const Tensor& grad_order);

template <typename T>
ProjectionBackwardView<T> projection_backward_view(const ProjectionArgs& a, ProjectionGrads& g) {
  Tensor none;
  ProjectionBackwardView<T> v;
  v.forward = projection_view<T>(a, none);
  v.grad_order = g.grad_order.const_data_ptr<T>();
  if (g.target.defined()) v.grad_target = g.target.mutable_data_ptr<T>();
  if (g.coeff.defined()) v.grad_coeff = g.coeff.mutable_data_ptr<T>();
  if (g.features.defined()) v.grad_features = g.features.mutable_data_ptr<T>();
  if (g.inventory_position.defined())
    v.grad_inventory_position = g.inventory_position.mutable_data_ptr<T>();
  return v;
}

// ---- observation -------------------------------------------------------------------------
struct ObservationArgs {
  Tensor on_hand, pipeline, exogenous, scale;
  int64_t batch = 0, max_lead = 0, width = 0;
};

ObservationArgs check_observation_args(const Tensor& on_hand, const Tensor& pipeline,
                                       const Tensor& exogenous, const Tensor& scale);

template <typename T, int kSlots = kRuntimeSize>
ObservationView<T, kSlots> observation_view(const ObservationArgs& a, Tensor& obs) {
  ObservationView<T, kSlots> v;
  v.on_hand = a.on_hand.const_data_ptr<T>();
  v.pipeline = a.pipeline.const_data_ptr<T>();
  v.exogenous = a.exogenous.const_data_ptr<T>();
  v.scale = a.scale.const_data_ptr<T>();
  v.obs = obs.mutable_data_ptr<T>();
  v.max_lead = a.max_lead;
  v.width = a.width;
  return v;
}

// ---- env_step ----------------------------------------------------------------------------
struct EnvStepArgs {
  StepArgs step;
  ObservationArgs observe;  // exogenous and scale; it observes the step's outputs
  Tensor cost_total, stats_total;
  bool accumulate;
};

EnvStepArgs check_env_step_args(const Tensor& on_hand, const Tensor& pipeline,
                                const Tensor& lead_time, const Tensor& order,
                                const Tensor& demand, const Tensor& holding_cost,
                                const Tensor& penalty_cost, const Tensor& order_cost,
                                bool lost_sales, const Tensor& exogenous, const Tensor& scale,
                                const Tensor& cost_total, const Tensor& stats_total,
                                bool accumulate);

struct EnvStepOutputs {
  StepOutputs step;
  Tensor reward, obs, cost_total, stats_total;
  std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> tuple() const {
    return {step.next_on_hand, step.next_pipeline, step.cost, step.stats, reward, obs,
            cost_total, stats_total};
  }
};
EnvStepOutputs empty_env_step_outputs(const EnvStepArgs& a);

template <typename T, typename I, int kSlots, int kDays>
EnvStepView<T, I, kSlots, kDays> env_step_view(const EnvStepArgs& a, EnvStepOutputs& o) {
  ObservationArgs observe = a.observe;
  observe.on_hand = o.step.next_on_hand;
  observe.pipeline = o.step.next_pipeline;
  return {step_view<T, I, kSlots, kDays>(a.step, o.step),
          observation_view<T, kSlots>(observe, o.obs),
          a.cost_total.const_data_ptr<T>(),
          a.stats_total.const_data_ptr<T>(),
          o.reward.mutable_data_ptr<T>(),
          o.cost_total.mutable_data_ptr<T>(),
          o.stats_total.mutable_data_ptr<T>(),
          a.accumulate};
}

// ---- rollout -----------------------------------------------------------------------------
struct RolloutArgs {
  Tensor on_hand, pipeline, lead_time, demand, params, holding_cost, penalty_cost, order_cost;
  Policy policy;
  int64_t review_period, warmup;
  bool lost_sales;
  int64_t batch, max_lead, horizon;
};

RolloutArgs check_rollout_args(const Tensor& on_hand, const Tensor& pipeline,
                               const Tensor& lead_time, const Tensor& demand,
                               const std::string& policy, const Tensor& params,
                               int64_t review_period, int64_t warmup, const Tensor& holding_cost,
                               const Tensor& penalty_cost, const Tensor& order_cost,
                               bool lost_sales);

struct RolloutOutputs {
  Tensor average_cost, cost, stats;
  std::tuple<Tensor, Tensor, Tensor> tuple() const { return {average_cost, cost, stats}; }
};
RolloutOutputs empty_rollout_outputs(const RolloutArgs& a);

template <typename T, typename I>
RolloutView<T, I> rollout_view(const RolloutArgs& a, RolloutOutputs& o) {
  RolloutView<T, I> v;
  v.on_hand = a.on_hand.const_data_ptr<T>();
  v.pipeline = a.pipeline.const_data_ptr<T>();
  v.lead_time = a.lead_time.const_data_ptr<I>();
  v.demand = a.demand.const_data_ptr<T>();
  v.params = a.params.const_data_ptr<T>();
  v.costs = unit_costs<T>(a.holding_cost, a.penalty_cost, a.order_cost);
  v.demand_stride_b = a.demand.stride(0);
  v.demand_stride_t = a.demand.stride(1);
  v.params_stride = a.params.size(0) == 1 ? 0 : a.params.size(1);
  v.num_params = a.params.size(1);
  v.max_lead = a.max_lead;
  v.horizon = a.horizon;
  v.review_period = a.review_period;
  v.warmup = a.warmup;
  v.policy = a.policy;
  v.lost_sales = a.lost_sales;
  v.average_cost = o.average_cost.mutable_data_ptr<T>();
  v.cost = o.cost.mutable_data_ptr<T>();
  v.stats = o.stats.mutable_data_ptr<T>();
  return v;
}

// Runs f.template operator()<T, I>() for the float dtype of `value` and the index dtype of
// `index` (int32 or int64).
#define DEEPSTOCK_DISPATCH(value, index, ...)                                        \
  AT_DISPATCH_FLOATING_TYPES((value).scalar_type(), "deepstock", [&] {                          \
    using T = scalar_t;                                                                \
    AT_DISPATCH_INDEX_TYPES((index).scalar_type(), "deepstock", [&] {                           \
      using I = index_t;                                                               \
      __VA_ARGS__();                                                                   \
    });                                                                                \
  })

}  // namespace deepstock
