// Argument checks and output allocation shared by the CPU and CUDA launchers (checks.h).
#include "deepstock/checks.h"

#include <atomic>
#include <sstream>
#include <string>
#include <vector>

namespace deepstock {
namespace {

std::atomic<bool> g_cuda_value_checks{true};

std::string prefix(const char* op) { return std::string("deepstock.") + op + ": "; }

// One tensor argument of an op and the shape it must have. The checks run over all of an op's
// arguments at once, so that when one argument disagrees with the others (dtype, device, batch
// size) the error names that argument rather than whichever was read first.
enum class Kind { kFloat, kIndex };
enum class Shape {
  kVector,     // [B]
  kMatrix,     // [B, cols]
  kBroadcast,  // [B] or a single element
  kRows,       // [B or 1, cols] (rollout's params); does not vote on B
};
struct Arg {
  const Tensor* t;
  const char* name;
  Kind kind;
  Shape shape;
  int64_t cols = -1;               // required columns of a matrix, -1 for any (or cols_like's)
  const char* cols_what = nullptr;  // the columns' name in messages ("P", "max_lead")
  const Tensor* cols_like = nullptr;  // columns taken from this (already checked) matrix ...
  const char* cols_like_name = nullptr;  // ... named so in messages
};

const char* kind_text(Kind kind) {
  return kind == Kind::kFloat ? "float32 or float64" : "int32 or int64";
}

bool kind_ok(const Tensor& t, Kind kind) {
  const auto dtype = t.scalar_type();
  return kind == Kind::kFloat ? (dtype == at::kFloat || dtype == at::kDouble)
                              : (dtype == at::kInt || dtype == at::kLong);
}

// The index of the earliest argument whose key most arguments share, among those `votes`.
template <typename Key, typename Votes>
size_t consensus(const std::vector<Arg>& args, Key key, Votes votes) {
  size_t best = args.size(), best_count = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    if (!votes(args[i])) continue;
    size_t count = 0;
    for (const Arg& other : args)
      if (votes(other) && key(other) == key(args[i])) ++count;
    if (count > best_count) best = i, best_count = count;
  }
  return best;
}

int64_t batch_of(const Arg& a) {
  return a.shape == Shape::kBroadcast ? a.t->numel() : a.t->size(0);
}
bool votes_on_batch(const Arg& a) {
  return a.shape == Shape::kVector || a.shape == Shape::kMatrix ||
         (a.shape == Shape::kBroadcast && a.t->numel() != 1);
}

// Checks presence, dtype, rank, device, batch size and columns of `args`; returns B (0 when no
// argument carries it).
int64_t check_args(const std::vector<Arg>& args, const char* op) {
  for (const Arg& a : args) {
    const Tensor& t = *a.t;
    TORCH_CHECK(t.defined(), prefix(op), a.name, " is required");
    TORCH_CHECK(kind_ok(t, a.kind), prefix(op), a.name, " must be ", kind_text(a.kind), ", got ",
                t.scalar_type());
    const bool matrix = a.shape == Shape::kMatrix || a.shape == Shape::kRows;
    TORCH_CHECK(matrix ? t.dim() == 2 : (a.shape == Shape::kVector ? t.dim() == 1 : t.dim() <= 1),
                prefix(op), a.name, " must have shape ",
                matrix ? (a.shape == Shape::kRows ? "[B or 1, n]" : "[B, n]")
                       : (a.shape == Shape::kVector ? "[B]" : "[B] or a single element"),
                ", got ", t.sizes());
  }
  const auto all = [](const Arg&) { return true; };
  const Arg& device = args[consensus(args, [](const Arg& a) { return a.t->device(); }, all)];
  for (const Arg& a : args)
    TORCH_CHECK(a.t->device() == device.t->device(), prefix(op), a.name, " is on ",
                a.t->device(), " but ", device.name, " is on ", device.t->device());
  const auto is_float = [](const Arg& a) { return a.kind == Kind::kFloat; };
  const size_t d = consensus(args, [](const Arg& a) { return a.t->scalar_type(); }, is_float);
  for (const Arg& a : args)
    TORCH_CHECK(!is_float(a) || a.t->scalar_type() == args[d].t->scalar_type(), prefix(op),
                a.name, " has dtype ", a.t->scalar_type(), " but ", args[d].name, " has ",
                args[d].t->scalar_type());
  const size_t b = consensus(args, batch_of, votes_on_batch);
  if (b == args.size()) return 0;
  const int64_t batch = batch_of(args[b]);
  for (const Arg& a : args) {
    const Tensor& t = *a.t;
    const char* from = args[b].name;
    switch (a.shape) {
      case Shape::kVector:
        TORCH_CHECK(t.size(0) == batch, prefix(op), a.name, " must have shape [B] = [", batch,
                    "] (B of ", from, "), got ", t.sizes());
        break;
      case Shape::kBroadcast:
        TORCH_CHECK(t.numel() == 1 || t.numel() == batch, prefix(op), a.name,
                    " must have shape [B] = [", batch, "] (B of ", from,
                    ") or a single element, got ", t.sizes());
        break;
      case Shape::kMatrix:
      case Shape::kRows: {
        const int64_t cols = a.cols_like ? a.cols_like->size(1) : a.cols;
        const bool rows_ok = t.size(0) == batch || (a.shape == Shape::kRows && t.size(0) == 1);
        std::ostringstream want;
        want << "[" << (a.shape == Shape::kRows ? "B or 1" : "B") << ", "
             << (a.cols_what ? a.cols_what : cols >= 0 ? std::to_string(cols) : "n")
             << "] with B = "
             << batch << " (of " << from << ")";
        if (cols >= 0 && a.cols_what) {
          want << " and " << a.cols_what << " = " << cols;
          if (a.cols_like_name) want << " (" << a.cols_like_name << ".size(1))";
        }
        TORCH_CHECK(rows_ok && (cols < 0 || t.size(1) == cols), prefix(op), a.name,
                    " must have shape ", want.str(), ", got ", t.sizes());
        break;
      }
    }
  }
  return batch;
}

Arg vector(const Tensor& t, const char* name, Kind kind = Kind::kFloat) {
  return {&t, name, kind, Shape::kVector};
}
Arg broadcast(const Tensor& t, const char* name) {
  return {&t, name, Kind::kFloat, Shape::kBroadcast};
}
Arg matrix(const Tensor& t, const char* name, const char* what, int64_t cols = -1) {
  return {&t, name, Kind::kFloat, Shape::kMatrix, cols, what};
}
// A matrix with the columns of `like` (pipeline-shaped gradients and outputs, features).
Arg matrix_like(const Tensor& t, const char* name, const char* what, const Tensor& like,
                const char* like_name) {
  return {&t, name, Kind::kFloat, Shape::kMatrix, -1, what, &like, like_name};
}

// The environment state every op starts from.
void add_state(std::vector<Arg>& args, const Tensor& on_hand, const Tensor& pipeline,
               const Tensor& lead_time) {
  args.push_back(vector(on_hand, "on_hand"));
  args.push_back(matrix(pipeline, "pipeline", "max_lead"));
  args.push_back(vector(lead_time, "lead_time", Kind::kIndex));
}

void add_costs(std::vector<Arg>& args, const Tensor& holding_cost, const Tensor& penalty_cost,
               const Tensor& order_cost) {
  args.push_back(broadcast(holding_cost, "holding_cost"));
  args.push_back(broadcast(penalty_cost, "penalty_cost"));
  args.push_back(broadcast(order_cost, "order_cost"));
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
  if (errors & kBadHoldingCost) msg << " holding_cost must be non-negative and finite;";
  if (errors & kBadPenaltyCost) msg << " penalty_cost must be non-negative and finite;";
  if (errors & kBadOrderCost) msg << " order_cost must be non-negative and finite;";
  if (errors & kBadOnHand)
    msg << " on_hand must be finite (and non-negative under lost sales);";
  if (errors & kBadPipeline) msg << " pipeline must be non-negative and finite;";
  if (errors & kBadPolicy)
    msg << " params must be finite for the policy (cap and constant order non-negative,"
           " s <= S);";
  if (errors & kBadMaxOrder) msg << " max_order must be non-negative (inf for no cap);";
  if (errors & kBadScale) msg << " scale must be positive and finite;";
  TORCH_CHECK(false, msg.str());
}

namespace {

std::vector<Arg> step_arg_list(const Tensor& on_hand, const Tensor& pipeline,
                               const Tensor& lead_time, const Tensor& order, const Tensor& demand,
                               const Tensor& holding_cost, const Tensor& penalty_cost,
                               const Tensor& order_cost) {
  std::vector<Arg> args;
  add_state(args, on_hand, pipeline, lead_time);
  args.push_back(vector(order, "order"));
  args.push_back(matrix(demand, "demand", "P"));
  add_costs(args, holding_cost, penalty_cost, order_cost);
  return args;
}

// StepArgs of arguments that passed check_args.
StepArgs step_args(const Tensor& on_hand, const Tensor& pipeline, const Tensor& lead_time,
                   const Tensor& order, const Tensor& demand, const Tensor& holding_cost,
                   const Tensor& penalty_cost, const Tensor& order_cost, bool lost_sales,
                   const char* op) {
  TORCH_CHECK(demand.size(1) >= 1, prefix(op),
              "demand must cover at least one day (review period P >= 1), got shape ",
              demand.sizes());
  return {on_hand.contiguous(), pipeline.contiguous(), lead_time.contiguous(), order.contiguous(),
          demand,  // read through its strides
          holding_cost.contiguous(), penalty_cost.contiguous(), order_cost.contiguous(),
          lost_sales, on_hand.size(0), pipeline.size(1), demand.size(1)};
}

}  // namespace

StepArgs check_step_args(const Tensor& on_hand, const Tensor& pipeline, const Tensor& lead_time,
                         const Tensor& order, const Tensor& demand, const Tensor& holding_cost,
                         const Tensor& penalty_cost, const Tensor& order_cost, bool lost_sales,
                         const char* op) {
  check_args(step_arg_list(on_hand, pipeline, lead_time, order, demand, holding_cost,
                           penalty_cost, order_cost),
             op);
  return step_args(on_hand, pipeline, lead_time, order, demand, holding_cost, penalty_cost,
                   order_cost, lost_sales, op);
}

StepArgs check_step_backward_args(const Tensor& grad_next_on_hand,
                                  const Tensor& grad_next_pipeline, const Tensor& grad_cost,
                                  const Tensor& on_hand, const Tensor& pipeline,
                                  const Tensor& lead_time, const Tensor& order,
                                  const Tensor& demand, const Tensor& holding_cost,
                                  const Tensor& penalty_cost, const Tensor& order_cost,
                                  bool lost_sales, const char* op) {
  std::vector<Arg> args = step_arg_list(on_hand, pipeline, lead_time, order, demand,
                                        holding_cost, penalty_cost, order_cost);
  args.push_back(vector(grad_next_on_hand, "grad_next_on_hand"));
  args.push_back(
      matrix_like(grad_next_pipeline, "grad_next_pipeline", "max_lead", pipeline, "pipeline"));
  args.push_back(matrix(grad_cost, "grad_cost", nullptr, 3));
  check_args(args, op);
  return step_args(on_hand, pipeline, lead_time, order, demand, holding_cost, penalty_cost,
                   order_cost, lost_sales, op);
}

StepOutputs empty_step_outputs(const StepArgs& a) {
  return {a.on_hand.new_empty({a.batch}), a.on_hand.new_empty({a.batch, a.max_lead}),
          a.on_hand.new_empty({a.batch, 3}), a.on_hand.new_empty({a.batch, 4})};
}

StepGrads make_step_grads(const StepArgs& a, const Tensor& grad_next_on_hand,
                          const Tensor& grad_next_pipeline, const Tensor& grad_cost) {
  const Tensor& like = a.on_hand;
  return {grad_next_on_hand.contiguous(), grad_next_pipeline.contiguous(), grad_cost.contiguous(),
          like.new_empty({a.batch}), like.new_empty({a.batch, a.max_lead}),
          like.new_empty({a.batch}), like.new_empty({a.batch}), like.new_empty({a.batch}),
          like.new_empty({a.batch})};
}

ProjectionArgs check_projection_args(const Tensor& target, const Tensor& coeff,
                                     const Tensor& features, const Tensor& inventory_position,
                                     const Tensor& max_order, ProjectionInputs inputs,
                                     const char* op, const Tensor* grad_order) {
  std::vector<Arg> args;
  if (grad_order) args.push_back(vector(*grad_order, "grad_order"));
  if (inputs.target) args.push_back(vector(target, "target"));
  if (inputs.coeff) {
    args.push_back(matrix(coeff, "coeff", "m"));
    args.push_back(matrix_like(features, "features", "m", coeff, "coeff"));
  }
  if (inputs.inventory_position) args.push_back(vector(inventory_position, "inventory_position"));
  args.push_back(broadcast(max_order, "max_order"));
  ProjectionArgs a;
  a.batch = check_args(args, op);
  if (inputs.target) a.target = target.contiguous();
  if (inputs.coeff) {
    TORCH_CHECK(coeff.size(1) >= 1, prefix(op), "coeff must have shape [B, m] with m >= 1, got ",
                coeff.sizes());
    a.coeff = coeff.contiguous();
    a.features = features.contiguous();
    a.num_features = coeff.size(1);
  }
  if (inputs.inventory_position) a.inventory_position = inventory_position.contiguous();
  a.max_order = max_order.contiguous();
  return a;
}

ProjectionGrads make_projection_grads(const ProjectionArgs& a, const Tensor& grad_order) {
  const Tensor& like = a.target.defined() ? a.target : a.coeff;
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

ObservationArgs check_observation_args(const Tensor& on_hand, const Tensor& pipeline,
                                       const Tensor& exogenous, const Tensor& scale) {
  check_args({vector(on_hand, "on_hand"), matrix(pipeline, "pipeline", "max_lead"),
              matrix(exogenous, "exogenous", "n"), vector(scale, "scale")},
             "observation");
  ObservationArgs a;
  a.on_hand = on_hand.contiguous();
  a.pipeline = pipeline.contiguous();
  a.exogenous = exogenous.contiguous();
  a.scale = scale.contiguous();
  a.batch = on_hand.size(0);
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
  std::vector<Arg> args = step_arg_list(on_hand, pipeline, lead_time, order, demand,
                                        holding_cost, penalty_cost, order_cost);
  args.push_back(matrix(exogenous, "exogenous", "n"));
  args.push_back(vector(scale, "scale"));
  args.push_back(matrix(cost_total, "cost_total", nullptr, 3));
  args.push_back(matrix(stats_total, "stats_total", nullptr, 4));
  check_args(args, op);
  EnvStepArgs a;
  a.step = step_args(on_hand, pipeline, lead_time, order, demand, holding_cost, penalty_cost,
                     order_cost, lost_sales, op);
  // on_hand and pipeline of the observation: the step's outputs (env_step_view)
  a.observe.exogenous = exogenous.contiguous();
  a.observe.scale = scale.contiguous();
  a.observe.batch = a.step.batch;
  a.observe.max_lead = a.step.max_lead;
  a.observe.width = exogenous.size(1);
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

RolloutArgs check_rollout_args(const Tensor& on_hand, const Tensor& pipeline,
                               const Tensor& lead_time, const Tensor& demand,
                               const std::string& policy, const Tensor& params,
                               int64_t review_period, int64_t warmup, const Tensor& holding_cost,
                               const Tensor& penalty_cost, const Tensor& order_cost,
                               bool lost_sales) {
  const char* op = "rollout";
  std::vector<Arg> args;
  add_state(args, on_hand, pipeline, lead_time);
  args.push_back(matrix(demand, "demand", "T"));
  args.push_back({&params, "params", Kind::kFloat, Shape::kRows});
  add_costs(args, holding_cost, penalty_cost, order_cost);
  const int64_t batch = check_args(args, op);
  TORCH_CHECK(pipeline.size(1) <= kMaxRolloutLead, prefix(op), "max_lead (pipeline.size(1)) is ",
              pipeline.size(1), "; rollout supports up to ", kMaxRolloutLead);

  Policy kind;
  int64_t n_params;
  if (policy == "base_stock") { kind = Policy::kBaseStock; n_params = 1; }
  else if (policy == "capped_base_stock") { kind = Policy::kCappedBaseStock; n_params = 2; }
  else if (policy == "constant") { kind = Policy::kConstant; n_params = 1; }
  else if (policy == "s_S") { kind = Policy::kMinMax; n_params = 2; }
  else TORCH_CHECK(false, prefix(op), "policy must be one of base_stock, capped_base_stock, "
                   "constant, s_S; got '", policy, "'");
  TORCH_CHECK((params.size(0) == batch || params.size(0) == 1) && params.size(1) == n_params,
              prefix(op), "params for policy ", policy, " must have shape [B, ", n_params,
              "] or [1, ", n_params, "] with B = ", batch, ", got ", params.sizes());
  TORCH_CHECK(review_period >= 1, prefix(op), "review_period must be >= 1, got ", review_period);
  TORCH_CHECK(warmup >= 0, prefix(op), "warmup must be >= 0, got ", warmup);
  TORCH_CHECK(demand.size(1) > warmup, prefix(op), "demand covers T = ", demand.size(1),
              " periods but warmup = ", warmup, ": need T > warmup");
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
