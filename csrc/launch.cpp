// Argument checks and output allocation shared by the CPU and CUDA launchers (launch.h).
#include "deepstock/launch.h"

#include <atomic>
#include <sstream>

namespace deepstock {
namespace {

std::atomic<bool> g_cuda_value_checks{true};

std::string prefix(const char* op) { return std::string("deepstock.") + op + ": "; }

void check_float(const Tensor& t, const char* name, const Tensor& like, const char* op) {
  TORCH_CHECK(t.defined(), prefix(op), name, " is required");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, prefix(op), name,
              " must be float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), prefix(op), name, " has dtype ",
              t.scalar_type(), " but the other inputs have ", like.scalar_type());
  TORCH_CHECK(t.device() == like.device(), prefix(op), name, " is on ", t.device(),
              " but the other inputs are on ", like.device());
}

void check_index(const Tensor& t, const char* name, const Tensor& like, const char* op) {
  TORCH_CHECK(t.scalar_type() == at::kInt || t.scalar_type() == at::kLong, prefix(op), name,
              " must be int32 or int64, got ", t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), prefix(op), name, " is on ", t.device(),
              " but the other inputs are on ", like.device());
}

void check_vector(const Tensor& t, const char* name, int64_t batch, const char* op) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == batch, prefix(op), name, " must have shape [B] = [",
              batch, "], got ", t.sizes());
}

void check_matrix(const Tensor& t, const char* name, int64_t batch, int64_t cols,
                  const char* what, const char* op) {
  TORCH_CHECK(t.dim() == 2 && t.size(0) == batch && (cols < 0 || t.size(1) == cols), prefix(op),
              name, " must have shape [B, ", what, "] with B = ", batch,
              cols < 0 ? std::string() : " and " + std::string(what) + " = " + std::to_string(cols),
              ", got ", t.sizes());
}

// A per-environment parameter: shape [B], or one element broadcast over the batch.
void check_broadcast(const Tensor& t, const char* name, int64_t batch, const char* op) {
  TORCH_CHECK(t.dim() <= 1 && (t.numel() == 1 || t.numel() == batch), prefix(op), name,
              " must have shape [B] = [", batch, "] or a single element, got ", t.sizes());
}

// The environment state every op starts from; returns the batch size B.
int64_t check_state(const Tensor& on_hand, const Tensor& pipeline, const Tensor& lead_time,
                    const char* op) {
  check_float(on_hand, "on_hand", on_hand, op);
  TORCH_CHECK(on_hand.dim() == 1, prefix(op), "on_hand must have shape [B], got ",
              on_hand.sizes());
  const int64_t batch = on_hand.size(0);
  check_float(pipeline, "pipeline", on_hand, op);
  check_matrix(pipeline, "pipeline", batch, -1, "max_lead", op);
  check_index(lead_time, "lead_time", on_hand, op);
  check_vector(lead_time, "lead_time", batch, op);
  return batch;
}

void check_costs(const Tensor& holding_cost, const Tensor& penalty_cost, const Tensor& order_cost,
                 int64_t batch, const Tensor& like, const char* op) {
  check_float(holding_cost, "holding_cost", like, op);
  check_broadcast(holding_cost, "holding_cost", batch, op);
  check_float(penalty_cost, "penalty_cost", like, op);
  check_broadcast(penalty_cost, "penalty_cost", batch, op);
  check_float(order_cost, "order_cost", like, op);
  check_broadcast(order_cost, "order_cost", batch, op);
}

// The observation's state-independent inputs: exogenous [B, n] and scale [B].
void check_exogenous(const Tensor& exogenous, const Tensor& scale, int64_t batch,
                     const Tensor& like, const char* op) {
  check_float(exogenous, "exogenous", like, op);
  check_matrix(exogenous, "exogenous", batch, -1, "n", op);
  check_float(scale, "scale", like, op);
  check_vector(scale, "scale", batch, op);
}

}  // namespace

bool cuda_value_checks() { return g_cuda_value_checks.load(); }
bool set_cuda_value_checks(bool enabled) { return g_cuda_value_checks.exchange(enabled); }

void raise_input_errors(int errors, const char* op) {
  if (errors == 0) return;
  std::ostringstream msg;
  msg << prefix(op) << "invalid input values:";
  if (errors & kBadOrder) msg << " order must be non-negative and finite;";
  if (errors & kBadDemand) msg << " demand must be non-negative and finite;";
  if (errors & kBadLeadTime) msg << " lead_time must lie in 0..max_lead (pipeline.size(1));";
  if (errors & kBadCost)
    msg << " holding_cost, penalty_cost and order_cost must be non-negative and finite;";
  if (errors & kBadState)
    msg << " on_hand must be finite (and non-negative under lost sales) and pipeline"
           " non-negative and finite;";
  if (errors & kBadPolicy)
    msg << " params must be finite for the policy (cap and constant order non-negative,"
           " s <= S);";
  if (errors & kBadMaxOrder) msg << " max_order must be non-negative (inf for no cap);";
  TORCH_CHECK(false, msg.str());
}

StepArgs check_step_args(const Tensor& on_hand, const Tensor& pipeline, const Tensor& lead_time,
                         const Tensor& order, const Tensor& demand, const Tensor& holding_cost,
                         const Tensor& penalty_cost, const Tensor& order_cost, bool lost_sales,
                         const char* op) {
  const int64_t batch = check_state(on_hand, pipeline, lead_time, op);
  check_float(order, "order", on_hand, op);
  check_vector(order, "order", batch, op);
  check_float(demand, "demand", on_hand, op);
  check_matrix(demand, "demand", batch, -1, "P", op);
  TORCH_CHECK(demand.size(1) >= 1, prefix(op),
              "demand must cover at least one day (review period P >= 1), got shape ",
              demand.sizes());
  check_costs(holding_cost, penalty_cost, order_cost, batch, on_hand, op);
  return {on_hand.contiguous(), pipeline.contiguous(), lead_time.contiguous(), order.contiguous(),
          demand,  // read through its strides
          holding_cost.contiguous(), penalty_cost.contiguous(), order_cost.contiguous(),
          lost_sales, batch, pipeline.size(1), demand.size(1)};
}

StepOutputs empty_step_outputs(const StepArgs& a) {
  return {a.on_hand.new_empty({a.batch}), a.on_hand.new_empty({a.batch, a.max_lead}),
          a.on_hand.new_empty({a.batch, 3}), a.on_hand.new_empty({a.batch, 4})};
}

StepGrads make_step_grads(const StepArgs& a, const Tensor& grad_next_on_hand,
                          const Tensor& grad_next_pipeline, const Tensor& grad_cost) {
  const char* op = "inventory_step_backward";
  check_float(grad_next_on_hand, "grad_next_on_hand", a.on_hand, op);
  check_vector(grad_next_on_hand, "grad_next_on_hand", a.batch, op);
  check_float(grad_next_pipeline, "grad_next_pipeline", a.on_hand, op);
  check_matrix(grad_next_pipeline, "grad_next_pipeline", a.batch, a.max_lead, "max_lead", op);
  check_float(grad_cost, "grad_cost", a.on_hand, op);
  check_matrix(grad_cost, "grad_cost", a.batch, 3, "3", op);
  const Tensor& like = a.on_hand;
  return {grad_next_on_hand.contiguous(), grad_next_pipeline.contiguous(), grad_cost.contiguous(),
          like.new_empty({a.batch}), like.new_empty({a.batch, a.max_lead}),
          like.new_empty({a.batch}), like.new_empty({a.batch}), like.new_empty({a.batch}),
          like.new_empty({a.batch})};
}

ProjectionArgs check_projection_args(const Tensor& target, const Tensor& coeff,
                                     const Tensor& features, const Tensor& inventory_position,
                                     const Tensor& max_order, const char* op) {
  ProjectionArgs a;
  const Tensor& like = target.defined() ? target : coeff;
  const char* first = target.defined() ? "target" : "coeff";
  check_float(like, first, like, op);
  int64_t batch = 0;
  if (target.defined()) {
    TORCH_CHECK(target.dim() == 1, prefix(op), "target must have shape [B], got ",
                target.sizes());
    batch = target.size(0);
    a.target = target.contiguous();
  }
  if (coeff.defined()) {
    TORCH_CHECK(coeff.dim() == 2 && coeff.size(1) >= 1, prefix(op),
                "coeff must have shape [B, m] with m >= 1, got ", coeff.sizes());
    batch = coeff.size(0);
    check_float(features, "features", like, op);
    TORCH_CHECK(features.sizes() == coeff.sizes(), prefix(op),
                "features must have the shape of coeff ", coeff.sizes(), ", got ",
                features.sizes());
    a.coeff = coeff.contiguous();
    a.features = features.contiguous();
    a.num_features = coeff.size(1);
  }
  if (inventory_position.defined()) {
    check_float(inventory_position, "inventory_position", like, op);
    check_vector(inventory_position, "inventory_position", batch, op);
    a.inventory_position = inventory_position.contiguous();
  }
  check_float(max_order, "max_order", like, op);
  check_broadcast(max_order, "max_order", batch, op);
  a.max_order = max_order.contiguous();
  a.batch = batch;
  return a;
}

ObservationArgs check_observation_args(const Tensor& on_hand, const Tensor& pipeline,
                                       const Tensor& exogenous, const Tensor& scale) {
  const char* op = "observation";
  ObservationArgs a;
  check_float(on_hand, "on_hand", on_hand, op);
  TORCH_CHECK(on_hand.dim() == 1, prefix(op), "on_hand must have shape [B], got ",
              on_hand.sizes());
  a.batch = on_hand.size(0);
  check_float(pipeline, "pipeline", on_hand, op);
  check_matrix(pipeline, "pipeline", a.batch, -1, "max_lead", op);
  check_exogenous(exogenous, scale, a.batch, on_hand, op);
  a.on_hand = on_hand.contiguous();
  a.pipeline = pipeline.contiguous();
  a.exogenous = exogenous.contiguous();
  a.scale = scale.contiguous();
  a.max_lead = pipeline.size(1);
  a.width = exogenous.size(1);
  return a;
}

EnvStepArgs check_env_step_args(const Tensor& on_hand, const Tensor& pipeline,
                                const Tensor& lead_time, const Tensor& order,
                                const Tensor& demand, const Tensor& holding_cost,
                                const Tensor& penalty_cost, const Tensor& order_cost,
                                bool lost_sales, const Tensor& exogenous, const Tensor& scale,
                                const Tensor& cost_total, const Tensor& stats_total,
                                bool accumulate) {
  const char* op = "env_step";
  EnvStepArgs a;
  a.step = check_step_args(on_hand, pipeline, lead_time, order, demand, holding_cost,
                           penalty_cost, order_cost, lost_sales, op);
  check_exogenous(exogenous, scale, a.step.batch, on_hand, op);
  // on_hand and pipeline of the observation: the step's outputs (env_step_view)
  a.observe.exogenous = exogenous.contiguous();
  a.observe.scale = scale.contiguous();
  a.observe.batch = a.step.batch;
  a.observe.max_lead = a.step.max_lead;
  a.observe.width = exogenous.size(1);
  check_float(cost_total, "cost_total", on_hand, op);
  check_matrix(cost_total, "cost_total", a.step.batch, 3, "3", op);
  check_float(stats_total, "stats_total", on_hand, op);
  check_matrix(stats_total, "stats_total", a.step.batch, 4, "4", op);
  a.cost_total = cost_total.contiguous();
  a.stats_total = stats_total.contiguous();
  a.accumulate = accumulate;
  return a;
}

EnvStepOutputs empty_env_step_outputs(const EnvStepArgs& a) {
  const Tensor& like = a.step.on_hand;
  const int64_t batch = a.step.batch;
  return {empty_step_outputs(a.step), like.new_empty({batch}),
          like.new_empty({batch, 1 + a.observe.max_lead + a.observe.width}),
          like.new_empty({batch, 3}), like.new_empty({batch, 4})};
}

ProjectionGrads make_projection_grads(const ProjectionArgs& a, const Tensor& grad_order) {
  const Tensor& like = a.target.defined() ? a.target : a.coeff;
  check_float(grad_order, "grad_order", like, "projection backward");
  check_vector(grad_order, "grad_order", a.batch, "projection backward");
  ProjectionGrads g;
  g.grad_order = grad_order.contiguous();
  if (a.target.defined()) g.target = like.new_empty({a.batch});
  if (a.coeff.defined()) {
    g.coeff = like.new_empty({a.batch, a.num_features});
    g.features = like.new_empty({a.batch, a.num_features});
  }
  if (a.inventory_position.defined()) g.inventory_position = like.new_empty({a.batch});
  return g;
}

RolloutArgs check_rollout_args(const Tensor& on_hand, const Tensor& pipeline,
                               const Tensor& lead_time, const Tensor& demand,
                               const std::string& policy, const Tensor& params,
                               int64_t review_period, int64_t warmup, const Tensor& holding_cost,
                               const Tensor& penalty_cost, const Tensor& order_cost,
                               bool lost_sales) {
  const char* op = "rollout";
  const int64_t batch = check_state(on_hand, pipeline, lead_time, op);
  TORCH_CHECK(pipeline.size(1) <= kMaxRolloutLead, prefix(op), "max_lead (pipeline.size(1)) is ",
              pipeline.size(1), "; rollout supports up to ", kMaxRolloutLead);
  check_float(demand, "demand", on_hand, op);
  check_matrix(demand, "demand", batch, -1, "T", op);

  Policy kind;
  int64_t n_params;
  if (policy == "base_stock") { kind = Policy::kBaseStock; n_params = 1; }
  else if (policy == "capped_base_stock") { kind = Policy::kCappedBaseStock; n_params = 2; }
  else if (policy == "constant") { kind = Policy::kConstant; n_params = 1; }
  else if (policy == "s_S") { kind = Policy::kMinMax; n_params = 2; }
  else TORCH_CHECK(false, prefix(op), "policy must be one of base_stock, capped_base_stock, "
                   "constant, s_S; got '", policy, "'");
  check_float(params, "params", on_hand, op);
  TORCH_CHECK(params.dim() == 2 && (params.size(0) == batch || params.size(0) == 1) &&
                  params.size(1) == n_params,
              prefix(op), "params for policy ", policy, " must have shape [B, ", n_params,
              "] or [1, ", n_params, "] with B = ", batch, ", got ", params.sizes());
  TORCH_CHECK(review_period >= 1, prefix(op), "review_period must be >= 1, got ", review_period);
  TORCH_CHECK(warmup >= 0, prefix(op), "warmup must be >= 0, got ", warmup);
  TORCH_CHECK(demand.size(1) > warmup, prefix(op), "demand covers T = ", demand.size(1),
              " periods but warmup = ", warmup, ": need T > warmup");
  check_costs(holding_cost, penalty_cost, order_cost, batch, on_hand, op);
  return {on_hand.contiguous(), pipeline.contiguous(), lead_time.contiguous(),
          demand,  // read through its strides
          params.contiguous(), holding_cost.contiguous(), penalty_cost.contiguous(),
          order_cost.contiguous(), kind, review_period, warmup, lost_sales, batch,
          pipeline.size(1), demand.size(1)};
}

RolloutOutputs empty_rollout_outputs(const RolloutArgs& a) {
  return {a.on_hand.new_empty({a.batch}), a.on_hand.new_empty({a.batch, 3}),
          a.on_hand.new_empty({a.batch, 4})};
}

}  // namespace deepstock
