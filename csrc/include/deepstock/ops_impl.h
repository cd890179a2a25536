// The op implementations, written once over a device-specific `ForEach` that runs a
// per-environment view over the batch and returns the OR of its input-error bits:
//   struct ForEach { template <class View> int operator()(int64_t n, int64_t grain,
//                                                         const View& view, const Tensor& like); };
// cpu/ops_cpu.cpp and cuda/ops_cuda.cu instantiate it and register the results.
#pragma once

#include "deepstock/checks.h"

namespace deepstock {

constexpr ProjectionInputs kBaseStockInputs{true, false, true};
constexpr ProjectionInputs kCoeffInputs{false, true, false};
constexpr ProjectionInputs kBothInputs{false, true, true};

template <class ForEach>
struct Ops {
  static std::tuple<Tensor, Tensor, Tensor, Tensor> inventory_step(
      const Tensor& on_hand, const Tensor& pipeline, const Tensor& lead_time, const Tensor& order,
      const Tensor& demand, const Tensor& holding_cost, const Tensor& penalty_cost,
      const Tensor& order_cost, bool lost_sales) {
    const char* op = "inventory_step";
    const StepArgs a = check_step_args(on_hand, pipeline, lead_time, order, demand, holding_cost,
                                       penalty_cost, order_cost, lost_sales, op);
    StepOutputs o = empty_step_outputs(a);
    int errors = 0;
    DEEPSTOCK_DISPATCH(a.on_hand, a.lead_time, [&] {
      dispatch_step_sizes(a.max_lead, a.days, [&](auto slots, auto days) {
        const auto view = step_view<T, I, decltype(slots)::value, decltype(days)::value>(a, o);
        errors = ForEach{}(a.batch, 2048, view, a.on_hand);
      });
    });
    raise_input_errors(errors, op);
    return o.tuple();
  }

  static std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> inventory_step_backward(
      const Tensor& grad_next_on_hand, const Tensor& grad_next_pipeline, const Tensor& grad_cost,
      const Tensor& on_hand, const Tensor& pipeline, const Tensor& lead_time, const Tensor& order,
      const Tensor& demand, const Tensor& holding_cost, const Tensor& penalty_cost,
      const Tensor& order_cost, bool lost_sales) {
    const char* op = "inventory_step_backward";
    const StepArgs a = check_step_backward_args(grad_next_on_hand, grad_next_pipeline, grad_cost,
                                                on_hand, pipeline, lead_time, order, demand,
                                                holding_cost, penalty_cost, order_cost,
                                                lost_sales, op);
    StepGrads g = make_step_grads(a, grad_next_on_hand, grad_next_pipeline, grad_cost);
    int errors = 0;
    DEEPSTOCK_DISPATCH(a.on_hand, a.lead_time, [&] {
      errors = ForEach{}(a.batch, 1024, step_backward_view<T, I>(a, g), a.on_hand);
    });
    raise_input_errors(errors, op);
    return g.tuple();
  }

  static Tensor project(const Tensor& target, const Tensor& coeff, const Tensor& features,
                        const Tensor& inventory_position, const Tensor& max_order,
                        ProjectionInputs inputs, const char* op) {
    const ProjectionArgs a = check_projection_args(target, coeff, features, inventory_position,
                                                   max_order, inputs, op);
    const Tensor& like = a.target.defined() ? a.target : a.coeff;
    Tensor order = like.new_empty({a.batch});
    int errors = 0;
    AT_DISPATCH_FLOATING_TYPES(like.scalar_type(), "deepstock", [&] {
      errors = ForEach{}(a.batch, 4096, projection_view<scalar_t>(a, order), like);
    });
    raise_input_errors(errors, op);
    return order;
  }

  static ProjectionGrads project_backward(const Tensor& grad_order, const Tensor& target,
                                          const Tensor& coeff, const Tensor& features,
                                          const Tensor& inventory_position,
                                          const Tensor& max_order,
                                          ProjectionInputs inputs, const char* op) {
    const ProjectionArgs a = check_projection_args(target, coeff, features, inventory_position,
                                                   max_order, inputs, op, &grad_order);
    ProjectionGrads g = make_projection_grads(a, grad_order);
    int errors = 0;
    AT_DISPATCH_FLOATING_TYPES(g.grad_order.scalar_type(), "deepstock", [&] {
      errors = ForEach{}(a.batch, 4096, projection_backward_view<scalar_t>(a, g), g.grad_order);
    });
    raise_input_errors(errors, op);
    return g;
  }

  static Tensor base_stock_order(const Tensor& target, const Tensor& inventory_position,
                                 const Tensor& max_order) {
    return project(target, {}, {}, inventory_position, max_order, kBaseStockInputs,
                   "base_stock_order");
  }
  static std::tuple<Tensor, Tensor> base_stock_order_backward(const Tensor& grad_order,
                                                              const Tensor& target,
                                                              const Tensor& inventory_position,
                                                              const Tensor& max_order) {
    const ProjectionGrads g = project_backward(grad_order, target, {}, {}, inventory_position,
                                               max_order, kBaseStockInputs,
                                               "base_stock_order_backward");
    return {g.target, g.inventory_position};
  }
  static Tensor coeff_order(const Tensor& coeff, const Tensor& features,
                            const Tensor& max_order) {
    return project({}, coeff, features, {}, max_order, kCoeffInputs, "coeff_order");
  }
  static std::tuple<Tensor, Tensor> coeff_order_backward(const Tensor& grad_order,
                                                         const Tensor& coeff,
                                                         const Tensor& features,
                                                         const Tensor& max_order) {
    const ProjectionGrads g = project_backward(grad_order, {}, coeff, features, {}, max_order,
                                               kCoeffInputs, "coeff_order_backward");
    return {g.coeff, g.features};
  }
  static Tensor coeff_base_stock_order(const Tensor& coeff, const Tensor& features,
                                       const Tensor& inventory_position,
                                       const Tensor& max_order) {
    return project({}, coeff, features, inventory_position, max_order, kBothInputs,
                   "coeff_base_stock_order");
  }
  static std::tuple<Tensor, Tensor, Tensor> coeff_base_stock_order_backward(
      const Tensor& grad_order, const Tensor& coeff, const Tensor& features,
      const Tensor& inventory_position, const Tensor& max_order) {
    const ProjectionGrads g = project_backward(grad_order, {}, coeff, features,
                                               inventory_position, max_order, kBothInputs,
                                               "coeff_base_stock_order_backward");
    return {g.coeff, g.features, g.inventory_position};
  }

  static Tensor observation(const Tensor& on_hand, const Tensor& pipeline,
                            const Tensor& exogenous, const Tensor& scale) {
    const ObservationArgs a = check_observation_args(on_hand, pipeline, exogenous, scale);
    Tensor obs = a.on_hand.new_empty({a.batch, 1 + a.max_lead + a.width});
    int errors = 0;
    AT_DISPATCH_FLOATING_TYPES(obs.scalar_type(), "deepstock", [&] {
      dispatch_slots(a.max_lead, [&](auto slots) {
        errors = ForEach{}(a.batch, 4096,
                           observation_view<scalar_t, decltype(slots)::value>(a, obs), obs);
      });
    });
    raise_input_errors(errors, "observation");
    return obs;
  }

  static std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> env_step(
      const Tensor& on_hand, const Tensor& pipeline, const Tensor& lead_time, const Tensor& order,
      const Tensor& demand, const Tensor& holding_cost, const Tensor& penalty_cost,
      const Tensor& order_cost, bool lost_sales, const Tensor& exogenous, const Tensor& scale,
      const Tensor& cost_total, const Tensor& stats_total, bool accumulate) {
    const char* op = "env_step";
    const EnvStepArgs a = check_env_step_args(on_hand, pipeline, lead_time, order, demand,
                                              holding_cost, penalty_cost, order_cost, lost_sales,
                                              exogenous, scale, cost_total, stats_total,
                                              accumulate);
    EnvStepOutputs o = empty_env_step_outputs(a);
    int errors = 0;
    DEEPSTOCK_DISPATCH(a.step.on_hand, a.step.lead_time, [&] {
      dispatch_step_sizes(a.step.max_lead, a.step.days, [&](auto slots, auto days) {
        const auto view =
            env_step_view<T, I, decltype(slots)::value, decltype(days)::value>(a, o);
        errors = ForEach{}(a.step.batch, 2048, view, a.step.on_hand);
      });
    });
    raise_input_errors(errors, op);
    return o.tuple();
  }

  static std::tuple<Tensor, Tensor, Tensor> rollout(
      const Tensor& on_hand, const Tensor& pipeline, const Tensor& lead_time,
      const Tensor& demand, c10::string_view policy, const Tensor& params, int64_t review_period,
      int64_t warmup, const Tensor& holding_cost, const Tensor& penalty_cost,
      const Tensor& order_cost, bool lost_sales) {
    const char* op = "rollout";
    const RolloutArgs a = check_rollout_args(
        on_hand, pipeline, lead_time, demand, std::string(policy), params, review_period, warmup,
        holding_cost, penalty_cost, order_cost, lost_sales);
    RolloutOutputs o = empty_rollout_outputs(a);
    int errors = 0;
    DEEPSTOCK_DISPATCH(a.on_hand, a.lead_time, [&] {
      const RolloutView<T, I> view = rollout_view<T, I>(a, o);
      dispatch_pipeline_capacity(a.max_lead, [&](auto capacity) {
        constexpr int N = decltype(capacity)::value;
        errors = ForEach{}(a.batch, 16, WithCapacity<N, RolloutView<T, I>>{view}, a.on_hand);
      });
    });
    raise_input_errors(errors, op);
    return o.tuple();
  }
};

// Registers every op of Ops<ForEach> for one dispatch key.
#define DEEPSTOCK_REGISTER_OPS(m, OpsT)                                              \
  do {                                                                               \
    (m).impl("inventory_step", &OpsT::inventory_step);                               \
    (m).impl("inventory_step_backward", &OpsT::inventory_step_backward);             \
    (m).impl("base_stock_order", &OpsT::base_stock_order);                           \
    (m).impl("base_stock_order_backward", &OpsT::base_stock_order_backward);         \
    (m).impl("coeff_order", &OpsT::coeff_order);                                     \
    (m).impl("coeff_order_backward", &OpsT::coeff_order_backward);                   \
    (m).impl("coeff_base_stock_order", &OpsT::coeff_base_stock_order);               \
    (m).impl("coeff_base_stock_order_backward", &OpsT::coeff_base_stock_order_backward); \
    (m).impl("observation", &OpsT::observation);                                     \
    (m).impl("env_step", &OpsT::env_step);                                           \
    (m).impl("rollout", &OpsT::rollout);                                             \
  } while (0)

}  // namespace deepstock
