// Exact dynamic program for the lost-sales system with lead time L >= 1 and an order every P >= 1
// days (docs/DESIGN.md, "Timing"; Zipkin 2008 for P = 1). State at a review day, before
// ordering: s = (y, o_1 .. o_{L-1}), y = on-hand after the day's arrival, o_i = the order arriving
// in i days. An order q placed now arrives in L days. Each day costs h E(x - D)^+ + p E(D - x)^+
// for on-hand x after arrivals, and leaves (x - D)^+; the review costs c q. Only the on-hand is
// random inside an epoch, so its distribution is carried day by day. States and orders are
// integers with inventory position after ordering at most M, stored densely:
// index = ((y (M+1) + o_1) (M+1) + ...).
#pragma once

#include <cstdint>
#include <vector>

namespace deepstock {

struct LostSalesDP {
  const double* pmf;      // [num_demand]: P(D = d)
  int64_t num_demand;
  int64_t lead;           // L >= 1
  int64_t review_period;  // P >= 1
  int64_t max_position;   // M
  double order_cost;
  const double* cost_of_stock;  // [M + 1]: h E(x - D)^+ + p E(D - x)^+ for on-hand x

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

  // Units arriving k days after the review day (1 <= k): o_k, the order q on day L, else 0.
  static int64_t arriving(const int64_t* parts, int64_t lead, int64_t k, int64_t q) {
    return k < lead ? parts[k] : (k == lead ? q : 0);
  }

  // Expected cost of the epoch plus value of the next review state, ordering q in `parts`.
  // `dist` and `next` are scratch of size M + 1.
  double expected_epoch(const int64_t* parts, int64_t q, const double* V, double* dist,
                        double* next) const {
    // Index of the next review state, without its on-hand: the orders arriving 1..L-1 days
    // after it, i.e. P + 1 .. P + L - 1 days after today.
    int64_t tail = 0, scale = 1;
    for (int64_t i = lead - 1; i >= 1; --i) {
      tail += arriving(parts, lead, review_period + i, q) * scale;
      scale *= side();
    }
    // On-hand distribution after arrivals, day by day; day 0 starts at y with certainty.
    double cost = order_cost * q;
    int64_t lo = parts[0], hi = parts[0];  // support of dist; only it is read
    dist[parts[0]] = 1.0;
    double value = 0.0;
    for (int64_t k = 0; k < review_period; ++k) {
      const int64_t a = arriving(parts, lead, k + 1, q);
      const bool last = k + 1 == review_period;
      if (!last)
        for (int64_t x = 0; x <= hi + a && x <= max_position; ++x) next[x] = 0.0;
      for (int64_t x = lo; x <= hi; ++x) {
        const double px = dist[x];
        if (px == 0.0) continue;
        cost += px * cost_of_stock[x];
        // Demand d < x leaves x - d; demand >= x empties the shelf.
        double below = 0.0;
        const int64_t top = x < num_demand ? x : num_demand;
        for (int64_t d = 0; d < top; ++d) {
          const double p = px * pmf[d];
          below += pmf[d];
          if (last) value += p * V[(x - d + a) * scale + tail];
          else next[x - d + a] += p;
        }
        const double empty = px * (1.0 - below);
        if (last) value += empty * V[a * scale + tail];
        else next[a] += empty;
      }
      if (!last) {
        for (int64_t x = 0; x <= hi + a && x <= max_position; ++x) dist[x] = next[x];
        lo = a;
        hi = hi + a < max_position ? hi + a : max_position;
      }
    }
    return cost + value;
  }

  // Bellman backup of state `index`: the best order and its value. States with inventory
  // position above M are unreachable and skipped (returns false).
  bool backup(int64_t index, const double* V, double* best_value, int64_t* best_order) const {
    thread_local std::vector<double> scratch;
    if (static_cast<int64_t>(scratch.size()) < 2 * side()) scratch.resize(2 * side());
    int64_t parts[64];
    const int64_t position = decode(index, parts);
    if (position > max_position) return false;
    // Order 0 first: no sentinel value that a large V could undercut.
    double best = expected_epoch(parts, 0, V, scratch.data(), scratch.data() + side());
    int64_t arg = 0;
    for (int64_t q = 1; q <= max_position - position; ++q) {
      const double v = expected_epoch(parts, q, V, scratch.data(), scratch.data() + side());
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
