// The FLOP meter's dispatcher-level counter: the same counting as `flop_rules.CountingMode` (a
// Python dispatch mode), without a trip through Python for every op. Built and loaded by
// `nevisbench/compute/native.py` (torch.utils.cpp_extension); docs/flop-meter.md says why.
//
// While a thread has a counting window open, the dispatcher key `Fake` (unused by eager torch;
// below autograd, just above the Python key, so it sees the ops a Python dispatch mode sees) is in
// the thread's included set and a `Window` is on its debug-info stack; both travel with the
// autograd engine to the threads that run backward. For every op reaching the key:
// - an op with a FLOP rule (its name registered from Python) runs; then, when the window is `fast`
//   (no counter in it has masks or reports to a sink) and the rule is one of the five written here
//   too (convolution and its backward, mm, addmm, and _to_copy at 0), its FLOPs are added to the
//   window's sums, which Python takes at each change of its counters (`take`); otherwise the
//   Python handler gets the op's arguments and outputs exactly as `__torch_dispatch__` would;
// - an op that decomposes (a CompositeImplicitAutograd kernel) runs with the key still on, so its
//   parts are counted;
// - views, aliases and metadata queries run untouched;
// - any other op (elementwise, copies, reductions) runs, and the bytes it moved (the larger of its
//   outputs and its first operand) and the op itself are added to two process-wide totals, when
//   the window asks for bytes.
// The op itself, and the Python handler, run with the key excluded: what they do inside is not
// counted again (as a Python mode is popped while it handles an op).

#include <torch/extension.h>
#include <torch/library.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/node.h>
#include <c10/util/ThreadLocalDebugInfo.h>
#include <torch/csrc/jit/python/pybind_utils.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace {

constexpr c10::DispatchKey KEY = c10::DispatchKey::Fake;
constexpr std::string_view KIND_NAME = "nevisbench.meter";
const c10::DebugInfoKind KIND(&KIND_NAME);

struct Window : c10::DebugInfoBase {
  explicit Window(int64_t id_) : id(id_) {}
  const int64_t id;
  std::atomic<bool> bytes_on{false};
  std::atomic<bool> fast{false};
  // the fast path's sums since Python last took them: FLOPs forward, backward, forward with grad, ops
  std::atomic<int64_t> forward{0}, backward{0}, train_like{0}, ops{0};
};

// the FLOP rules written here as in flop_rules.py (`_conv`, `_conv_backward`, `_mm`, `_addmm`; the
// `_to_copy` of autocast's weight copies at 0), by the names Python registers them under
enum Rule : int8_t { PYTHON_ONLY = 0, CONV = 1, CONV_BACKWARD = 2, MM = 3, ADDMM = 4, ZERO = 5 };

// what an op is, found once per operator: >= 0 the index of an op with a FLOP rule
constexpr int32_t MOVED = -1, PASS = -2, DECOMPOSE = -3;

std::mutex g_lock;  // guards the tables below
std::unordered_set<std::string> g_counted;  // operator names with a FLOP rule ("aten::convolution")
std::unordered_set<std::string> g_pass;  // operator names run untouched (metadata queries, aliases)
std::unordered_map<const c10::FunctionSchema*, int32_t> g_kinds;
std::vector<std::pair<std::string, std::string>> g_names;  // index -> (name, overload)
std::vector<int8_t> g_rules;  // index -> Rule
std::unordered_map<std::string, int8_t> g_native;  // operator name -> Rule, for those written here
PyObject* g_handler = nullptr;  // handler(window id, index, args, kwargs, out)
std::atomic<int64_t> g_bytes{0}, g_ops{0};

bool is_view(const c10::FunctionSchema& schema) {
  for (const auto& argument : schema.arguments()) {
    const auto* alias = argument.alias_info();
    if (alias != nullptr && !alias->isWrite()) return true;
  }
  return false;
}

int32_t classify(const c10::OperatorHandle& op) {
  const c10::FunctionSchema* key = &op.schema();
  std::lock_guard<std::mutex> hold(g_lock);
  auto found = g_kinds.find(key);
  if (found != g_kinds.end()) return found->second;
  const auto& name = op.operator_name();
  int32_t kind;
  if (g_counted.count(name.name)) {
    kind = static_cast<int32_t>(g_names.size());
    g_names.emplace_back(name.name, name.overload_name);
    auto rule = g_native.find(name.name);
    g_rules.push_back(rule == g_native.end() ? PYTHON_ONLY : rule->second);
  } else if (g_pass.count(name.name)) {
    kind = PASS;
  } else if (name.name != "prim::device" && op.hasKernelForDispatchKey(c10::DispatchKey::CompositeImplicitAutograd)) {
    kind = DECOMPOSE;
  } else if (is_view(op.schema())) {
    kind = PASS;
  } else {
    kind = MOVED;
  }
  g_kinds.emplace(key, kind);
  return kind;
}

int64_t size_of(const c10::IValue& value) {
  if (value.isTensor()) {
    const auto& t = value.toTensor();
    return t.defined() ? static_cast<int64_t>(t.numel()) * static_cast<int64_t>(t.itemsize()) : 0;
  }
  if (value.isTensorList()) {
    int64_t total = 0;
    for (const at::Tensor& t : value.toTensorList().vec()) {
      if (t.defined()) total += static_cast<int64_t>(t.numel()) * static_cast<int64_t>(t.itemsize());
    }
    return total;
  }
  return 0;
}

// The op's arguments as `__torch_dispatch__` receives them: the positional ones up to the last that
// differs from its default, then the keyword-only ones that differ from theirs. Dtypes, layouts and
// memory formats arrive as their enum numbers (no FLOP rule reads them).
std::pair<py::tuple, py::dict> as_python(const c10::FunctionSchema& schema, const std::vector<c10::IValue>& inputs) {
  const auto& arguments = schema.arguments();
  const size_t n = std::min(arguments.size(), inputs.size());
  auto defaulted = [&](size_t i) {
    const auto& value = arguments[i].default_value();
    return value.has_value() && *value == inputs[i];
  };
  size_t keyword_start = n;
  while (keyword_start > 0 && arguments[keyword_start - 1].kwarg_only()) --keyword_start;
  size_t positional_end = keyword_start;
  while (positional_end > 0 && defaulted(positional_end - 1)) --positional_end;
  py::tuple args(positional_end);
  for (size_t i = 0; i < positional_end; ++i) args[i] = torch::jit::toPyObject(inputs[i]);
  py::dict kwargs;
  for (size_t i = keyword_start; i < n; ++i) {
    if (!defaulted(i)) kwargs[py::str(arguments[i].name())] = torch::jit::toPyObject(inputs[i]);
  }
  return {std::move(args), std::move(kwargs)};
}

void report(const c10::OperatorHandle& op, int64_t window, int32_t index, const std::vector<c10::IValue>& inputs,
            torch::jit::Stack* stack, size_t n_out) {
  c10::impl::ExcludeDispatchKeyGuard quiet(KEY);  // the handler's own torch work is not counted
  py::gil_scoped_acquire gil;
  if (g_handler == nullptr) return;
  auto parsed = as_python(op.schema(), inputs);
  py::object out;
  if (n_out == 1) {
    out = torch::jit::toPyObject(stack->back());
  } else {
    py::tuple outs(n_out);
    for (size_t i = 0; i < n_out; ++i) outs[i] = torch::jit::toPyObject((*stack)[stack->size() - n_out + i]);
    out = std::move(outs);
  }
  py::handle handler(g_handler);
  handler(window, index, parsed.first, parsed.second, out);
}

int32_t rule_of(int32_t index) {
  std::lock_guard<std::mutex> hold(g_lock);
  return g_rules.at(static_cast<size_t>(index));
}

int64_t product(c10::IntArrayRef sizes, size_t from) {
  int64_t out = 1;
  for (size_t i = from; i < sizes.size(); ++i) out *= sizes[i];
  return out;
}

// torch.utils.flop_counter.conv_flop_count: 2 x output positions (input's if transposed) x filter
// size x batch x out channels x in channels per group
int64_t conv_count(c10::IntArrayRef x, c10::IntArrayRef w, c10::IntArrayRef out, bool transposed) {
  return product(transposed ? x : out, 2) * product(w, 2) * x[0] * w[0] * w[1] * 2;
}

const at::Tensor* tensor_at(const std::vector<c10::IValue>& inputs, size_t i) {
  if (i >= inputs.size() || !inputs[i].isTensor()) return nullptr;
  const at::Tensor& t = inputs[i].toTensor();
  return t.defined() ? &t : nullptr;
}

// The op's FLOPs by its rule, or -1 where its arguments are not what the rule reads (Python counts it).
int64_t flops_of(int32_t rule, const std::vector<c10::IValue>& inputs, const torch::jit::Stack& stack, size_t n_out) {
  if (rule == ZERO) return 0;
  if (rule == CONV) {
    const at::Tensor *x = tensor_at(inputs, 0), *w = tensor_at(inputs, 1);
    if (x == nullptr || w == nullptr || n_out != 1 || !stack.back().isTensor() || inputs.size() < 7 || !inputs[6].isBool()) return -1;
    const at::Tensor& out = stack.back().toTensor();
    if (x->dim() < 3 || w->dim() != x->dim() || out.dim() != x->dim()) return -1;
    return conv_count(x->sizes(), w->sizes(), out.sizes(), inputs[6].toBool());
  }
  if (rule == CONV_BACKWARD) {
    const at::Tensor *grad = tensor_at(inputs, 0), *x = tensor_at(inputs, 1), *w = tensor_at(inputs, 2);
    if (grad == nullptr || x == nullptr || w == nullptr || inputs.size() < 11 || !inputs[7].isBool() || !inputs[10].isBoolList()) return -1;
    if (x->dim() < 3 || w->dim() != x->dim() || grad->dim() != x->dim()) return -1;
    const auto mask = inputs[10].toBoolList();
    if (mask.size() < 2) return -1;
    return conv_count(x->sizes(), w->sizes(), grad->sizes(), inputs[7].toBool()) * (int64_t{mask.get(0)} + int64_t{mask.get(1)});
  }
  const size_t first = rule == ADDMM ? 1 : 0;
  const at::Tensor *a = tensor_at(inputs, first), *b = tensor_at(inputs, first + 1);
  if (a == nullptr || b == nullptr || a->dim() != 2 || b->dim() != 2) return -1;
  return 2 * a->size(0) * a->size(1) * b->size(1);
}

bool counted_fast(Window* window, int32_t index, const std::vector<c10::IValue>& inputs, const torch::jit::Stack& stack,
                  size_t n_out) {
  if (!window->fast.load(std::memory_order_relaxed)) return false;
  const int32_t rule = rule_of(index);
  if (rule == PYTHON_ONLY) return false;
  const int64_t flops = flops_of(rule, inputs, stack, n_out);
  if (flops < 0) return false;
  window->ops.fetch_add(1, std::memory_order_relaxed);
  if (flops == 0) return true;
  if (torch::autograd::get_current_node()) {  // run by the autograd engine: backward
    window->backward.fetch_add(flops, std::memory_order_relaxed);
    return true;
  }
  window->forward.fetch_add(flops, std::memory_order_relaxed);
  if (c10::GradMode::is_enabled()) {
    for (const auto& value : inputs) {
      if (value.isTensor() && value.toTensor().defined() && value.toTensor().requires_grad()) {
        window->train_like.fetch_add(flops, std::memory_order_relaxed);
        break;
      }
    }
  }
  return true;
}

void fallback(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  const auto below = keys & c10::DispatchKeySet(c10::DispatchKeySet::FULL_AFTER, KEY);
  const int32_t kind = classify(op);
  if (kind == DECOMPOSE) {
    op.redispatchBoxed(below, stack);
    return;
  }
  auto* window = static_cast<Window*>(c10::ThreadLocalDebugInfo::get(KIND));
  if (kind == PASS || window == nullptr) {
    c10::impl::ExcludeDispatchKeyGuard quiet(KEY);
    op.redispatchBoxed(below, stack);
    return;
  }
  const size_t n_in = op.schema().arguments().size();
  const size_t n_out = op.schema().returns().size();
  if (kind >= 0) {
    std::vector<c10::IValue> inputs(stack->end() - static_cast<std::ptrdiff_t>(n_in), stack->end());
    {
      c10::impl::ExcludeDispatchKeyGuard quiet(KEY);
      op.redispatchBoxed(below, stack);
    }
    if (!counted_fast(window, kind, inputs, *stack, n_out)) report(op, window->id, kind, inputs, stack, n_out);
    return;
  }
  // as flop_rules.bytes_moved reads it: a first operand that is one tensor (not a list of them)
  const c10::IValue* head = n_in > 0 ? &(*stack)[stack->size() - n_in] : nullptr;
  const int64_t first = head != nullptr && head->isTensor() ? size_of(*head) : 0;
  {
    c10::impl::ExcludeDispatchKeyGuard quiet(KEY);
    op.redispatchBoxed(below, stack);
  }
  if (!window->bytes_on.load(std::memory_order_relaxed)) return;
  int64_t written = 0;
  for (size_t i = stack->size() - n_out; i < stack->size(); ++i) written += size_of((*stack)[i]);
  g_bytes.fetch_add(std::max(first, written), std::memory_order_relaxed);
  g_ops.fetch_add(1, std::memory_order_relaxed);
}

// -- the Python side's controls -------------------------------------------------------------------

void configure(const std::vector<std::string>& counted, const std::vector<std::string>& passed,
               const std::unordered_map<std::string, int8_t>& native, py::object handler) {
  std::lock_guard<std::mutex> hold(g_lock);
  g_counted = std::unordered_set<std::string>(counted.begin(), counted.end());
  g_pass = std::unordered_set<std::string>(passed.begin(), passed.end());
  g_native = native;
  g_kinds.clear();
  g_names.clear();
  g_rules.clear();
  Py_XDECREF(g_handler);
  g_handler = handler.release().ptr();
}

std::pair<std::string, std::string> op_name(int32_t index) {
  std::lock_guard<std::mutex> hold(g_lock);
  return g_names.at(static_cast<size_t>(index));
}

// Opens this thread's window (`id`); returns whether the key was included before, for `close`.
bool open_window(int64_t id) {
  c10::ThreadLocalDebugInfo::_push(KIND, std::make_shared<Window>(id));
  const bool before = c10::impl::tls_is_dispatch_key_included(KEY);
  c10::impl::tls_set_dispatch_key_included(KEY, true);
  return before;
}

void close_window(bool included_before) {
  c10::impl::tls_set_dispatch_key_included(KEY, included_before);
  if (c10::ThreadLocalDebugInfo::get(KIND) != nullptr) c10::ThreadLocalDebugInfo::_pop(KIND);
}

// What this thread's window does from now on: sum bytes moved (a counter audits them), count the
// five rules here (no counter needs each op in Python).
void want(bool bytes, bool fast) {
  auto* window = static_cast<Window*>(c10::ThreadLocalDebugInfo::get(KIND));
  if (window == nullptr) return;
  window->bytes_on.store(bytes, std::memory_order_relaxed);
  window->fast.store(fast, std::memory_order_relaxed);
}

// The fast path's sums of this thread's window since the last take: (forward, backward, train-like, ops).
std::tuple<int64_t, int64_t, int64_t, int64_t> take() {
  auto* window = static_cast<Window*>(c10::ThreadLocalDebugInfo::get(KIND));
  if (window == nullptr) return {0, 0, 0, 0};
  return {window->forward.exchange(0), window->backward.exchange(0), window->train_like.exchange(0), window->ops.exchange(0)};
}

// The id of the window this thread counts into now, or -1 when its ops are not counted (no window,
// or the key was taken out of the included set or put into the excluded one).
int64_t armed() {
  auto* window = static_cast<Window*>(c10::ThreadLocalDebugInfo::get(KIND));
  if (window == nullptr || !c10::impl::tls_is_dispatch_key_included(KEY) || c10::impl::tls_is_dispatch_key_excluded(KEY)) {
    return -1;
  }
  return window->id;
}

std::pair<int64_t, int64_t> moved() { return {g_bytes.load(), g_ops.load()}; }

}  // namespace

TORCH_LIBRARY_IMPL(_, Fake, m) { m.fallback(torch::CppFunction::makeFromBoxedFunction<&fallback>()); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("configure", &configure);
  m.def("op_name", &op_name);
  m.def("open", &open_window);
  m.def("close", &close_window);
  m.def("want", &want);
  m.def("take", &take);
  m.def("armed", &armed);
  m.def("moved", &moved);
}
