// Every schema of the deepstock namespace, in one place. Implementations are registered per
// dispatch key in cpu/*.cpp and cuda/*.cu; fake kernels and autograd in deepstock_fast/ops.py.
#include <torch/library.h>

TORCH_LIBRARY(deepstock, m) {
  m.def(
      "inventory_step(Tensor on_hand, Tensor pipeline, Tensor lead_time, Tensor order, "
      "Tensor demand, Tensor holding_cost, Tensor penalty_cost, Tensor order_cost, "
      "bool lost_sales) -> (Tensor next_on_hand, Tensor next_pipeline, Tensor cost, "
      "Tensor stats)");
  m.def(
      "inventory_step_backward(Tensor grad_next_on_hand, Tensor grad_next_pipeline, "
      "Tensor grad_cost, Tensor on_hand, Tensor pipeline, Tensor lead_time, Tensor order, "
      "Tensor demand, Tensor holding_cost, Tensor penalty_cost, Tensor order_cost, "
      "bool lost_sales) -> (Tensor grad_on_hand, Tensor grad_pipeline, Tensor grad_order, "
      "Tensor grad_holding_cost, Tensor grad_penalty_cost, Tensor grad_order_cost)");
  m.def("base_stock_order(Tensor target, Tensor inventory_position, Tensor max_order) -> Tensor");
  m.def(
      "base_stock_order_backward(Tensor grad_order, Tensor target, Tensor inventory_position, "
      "Tensor max_order) -> (Tensor grad_target, Tensor grad_inventory_position)");
  m.def("coeff_order(Tensor coeff, Tensor features, Tensor max_order) -> Tensor");
  m.def(
      "coeff_order_backward(Tensor grad_order, Tensor coeff, Tensor features, "
      "Tensor max_order) -> (Tensor grad_coeff, Tensor grad_features)");
  m.def(
      "coeff_base_stock_order(Tensor coeff, Tensor features, Tensor inventory_position, "
      "Tensor max_order) -> Tensor");
  m.def(
      "coeff_base_stock_order_backward(Tensor grad_order, Tensor coeff, Tensor features, "
      "Tensor inventory_position, Tensor max_order) -> (Tensor grad_coeff, "
      "Tensor grad_features, Tensor grad_inventory_position)");
  m.def(
      "observation(Tensor on_hand, Tensor pipeline, Tensor exogenous, Tensor scale) -> Tensor");
  m.def(
      "env_step(Tensor on_hand, Tensor pipeline, Tensor lead_time, Tensor order, "
      "Tensor demand, Tensor holding_cost, Tensor penalty_cost, Tensor order_cost, "
      "bool lost_sales, Tensor exogenous, Tensor scale, Tensor cost_total, Tensor stats_total, "
      "bool accumulate) -> (Tensor next_on_hand, Tensor next_pipeline, Tensor cost, "
      "Tensor stats, Tensor reward, Tensor obs, Tensor next_cost_total, "
      "Tensor next_stats_total)");
  m.def(
      "rollout(Tensor on_hand, Tensor pipeline, Tensor lead_time, Tensor demand, str policy, "
      "Tensor params, int review_period, int warmup, Tensor holding_cost, "
      "Tensor penalty_cost, Tensor order_cost, bool lost_sales) -> (Tensor average_cost, "
      "Tensor cost, Tensor stats)");
  m.def(
      "lost_sales_dp(Tensor demand_pmf, int lead_time, float holding_cost, float penalty_cost, "
      "float order_cost, int max_position, float tolerance, int max_iterations, "
      "Tensor? initial_value=None, int review_period=1) -> (Tensor cost_bounds, Tensor policy, "
      "Tensor relative_value, Tensor iterations)");
}
