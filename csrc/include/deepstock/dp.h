// Exact dynamic program for the lost-sales system with lead time L >= 1, reviewed every period
// (DESIGN.md, "Timing convention"; Zipkin 2008). State before ordering: s = (y, o_1 .. o_{L-1}),
// y = on-hand after today's arrival, o_i = order arriving in i periods. An order q placed now
// arrives in L periods. The period costs c q + h E(y - D)^+ + p E(D - y)^+; then
// s' = ((y - D)^+ + o_1, o_2 .. o_{L-1}, q). States and orders are integers with inventory
// position after ordering at most M, stored densely: index = ((y (M+1) + o_1) (M+1) + ...).
#pragma once

#include <cstdint>

namespace deepstock {

struct LostSalesDP {
  const double* pmf;      // [num_demand]: P(D = d)
  int64_t num_demand;
  int64_t lead;           // L >= 1
  int64_t max_position;   // M
  double holding, penalty, order_cost;
  const double* cost_of_stock;  // [M + 1]: h E(y - D)^+ + p E(D - y)^+ for on-hand y

  int64_t side() const { return max_position + 1; }

  // Decodes state `index` into y = parts[0] and o_i = parts[i]; returns the inventory position.
  int64_t decode(int64_t index, int64_t* parts) const {
    int64_t total = 0;
    for (int64_t i = lead - 1; i >= 0; --i) {
      parts[i] = index % side();
      index /= side();
      total += parts[i];
    }
    return total;
  }

  // Expected next-period value of ordering q in state `parts` under value function V.
  double expected_next(const int64_t* parts, int64_t q, const double* V) const {
    // s' = (z, o_2 .. o_{L-1}, q) with z = (y - D)^+ + o_1 (z = y - D + q when L = 1).
    int64_t tail = 0;  // index contribution of (o_2 .. o_{L-1}, q)
    int64_t scale = 1;
    if (lead > 1) {
      tail = q;
      for (int64_t i = lead - 1; i >= 2; --i) {
        scale *= side();
        tail += parts[i] * scale;
      }
      scale *= side();
    }
    const int64_t y = parts[0];
    const int64_t arriving = lead > 1 ? parts[1] : q;
    double value = 0.0, below = 0.0;
    const int64_t last = y < num_demand ? y : num_demand;
    for (int64_t d = 0; d < last; ++d) {
      value += pmf[d] * V[(y - d + arriving) * scale + tail];
      below += pmf[d];
    }
    // Demand >= y empties the shelf.
    return value + (1.0 - below) * V[arriving * scale + tail];
  }

  // Bellman backup of state `index`: the best order and its value. States with inventory
  // position above M are unreachable and skipped (returns false).
  bool backup(int64_t index, const double* V, double* best_value, int64_t* best_order) const {
    int64_t parts[64];
    const int64_t position = decode(index, parts);
    if (position > max_position) return false;
    const double base = cost_of_stock[parts[0]];
    double best = 1e300;
    int64_t arg = 0;
    for (int64_t q = 0; q <= max_position - position; ++q) {
      const double v = base + order_cost * q + expected_next(parts, q, V);
      if (v < best) {
        best = v;
        arg = q;
      }
    }
    *best_value = best;
    *best_order = arg;
    return true;
  }
};

}  // namespace deepstock
