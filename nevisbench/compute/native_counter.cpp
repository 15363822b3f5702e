// The FLOP meter's dispatcher-level counter: the same counting as `flop_rules.CountingMode` (a
// Python dispatch mode), without a trip through Python for every op. Built and loaded by
// `nevisbench/compute/native.py` (torch.utils.cpp_extension); docs/flop-meter.md says why.
//
// While a thread has a counting window open, the dispatcher key `Fake` (unused by eager torch;
// below autograd, just above the Python key, so it sees the ops a Python dispatch mode sees) is in
// the thread's included set and a `Window` is on its debug-info stack; both travel with the
// autograd engine to the threads that run backward. For every op reaching the key:
// - an op with a FLOP rule (its name registered from Python) runs, then the Python handler gets
//   its arguments and outputs exactly as `__torch_dispatch__` would;
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
#include <c10/core/impl/LocalDispatchKeySet.h>
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
};

// what an op is, found once per operator: >= 0 the index of an op with a FLOP rule
constexpr int32_t MOVED = -1, PASS = -2, DECOMPOSE = -3;

std::mutex g_lock;  // guards the tables below
std::unordered_set<std::string> g_counted;  // operator names with a FLOP rule ("aten::convolution")
std::unordered_set<std::string> g_pass;  // operator names run untouched (metadata queries, aliases)
std::unordered_map<const c10::FunctionSchema*, int32_t> g_kinds;
std::vector<std::pair<std::string, std::string>> g_names;  // index -> (name, overload)
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
    report(op, window->id, kind, inputs, stack, n_out);
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

void configure(const std::vector<std::string>& counted, const std::vector<std::string>& passed, py::object handler) {
  std::lock_guard<std::mutex> hold(g_lock);
  g_counted = std::unordered_set<std::string>(counted.begin(), counted.end());
  g_pass = std::unordered_set<std::string>(passed.begin(), passed.end());
  g_kinds.clear();
  g_names.clear();
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

void want_bytes(bool on) {
  auto* window = static_cast<Window*>(c10::ThreadLocalDebugInfo::get(KIND));
  if (window != nullptr) window->bytes_on.store(on, std::memory_order_relaxed);
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
  m.def("want_bytes", &want_bytes);
  m.def("armed", &armed);
  m.def("moved", &moved);
}
