// pybind11 side of the contract (csrc/contract.h), shared by both modules' bindings.cpp: reading Python's argument
// tuples into the argument blocks, and exporting the contract's constants.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "contract.h"

namespace fastral {
namespace bind {

namespace py = pybind11;

// Field readers: addresses arrive as Python ints, dtypes as their codes.
template <class T>
void read(py::handle h, T*& field) {
  field = reinterpret_cast<T*>(h.cast<std::uintptr_t>());
}
inline void read(py::handle h, Dtype& field) { field = static_cast<Dtype>(h.cast<int>()); }
template <class T>
void read(py::handle h, T& field) {
  field = h.cast<T>();
}

// Reads a Python tuple (fields in their FASTRAL_<KERNEL>_ARGS order) into an argument block and checks it with
// check_args; returns check_args's count of output elements (0: nothing to do).
#define FASTRAL_COUNT_FIELD(type, name) +1
#define FASTRAL_READ_FIELD(type, name) read(t[i++], a.name);
#define FASTRAL_DEFINE_READER(Args, FIELDS)                                                                   \
  inline int64_t read_args(const Check& c, const py::tuple& t, Args& a) {                                    \
    constexpr size_t kFields = 0 FIELDS(FASTRAL_COUNT_FIELD);                                                \
    c(t.size() == kFields, "expected " + std::to_string(kFields) + " arguments, got " + std::to_string(t.size())); \
    size_t i = 0;                                                                                            \
    FIELDS(FASTRAL_READ_FIELD)                                                                               \
    return check_args(c, a);                                                                                 \
  }
FASTRAL_DEFINE_READER(RegionStatsArgs, FASTRAL_REGION_STATS_ARGS)
FASTRAL_DEFINE_READER(KlHistogramArgs, FASTRAL_KL_HISTOGRAM_ARGS)
FASTRAL_DEFINE_READER(BaldStackedArgs, FASTRAL_BALD_STACKED_ARGS)
FASTRAL_DEFINE_READER(BaldUpdateArgs, FASTRAL_BALD_UPDATE_ARGS)
FASTRAL_DEFINE_READER(BaldFinalizeArgs, FASTRAL_BALD_FINALIZE_ARGS)
#undef FASTRAL_DEFINE_READER
#undef FASTRAL_READ_FIELD
#undef FASTRAL_COUNT_FIELD

// FLAG_NONFINITE, FLAG_NEGATIVE, FLAG_SUM_RANGE and DTYPE_CODES ({"float32": 0, ...}) as module attributes, for
// the test that compares them with fastral/ops/_common.py.
inline void export_contract(py::module_& m) {
  m.attr("FLAG_NONFINITE") = static_cast<int>(kFlagNonFinite);
  m.attr("FLAG_NEGATIVE") = static_cast<int>(kFlagNegative);
  m.attr("FLAG_SUM_RANGE") = static_cast<int>(kFlagSumRange);
  py::dict codes;
  for (int code = 0; code < kDtypeCount; ++code) codes[kDtypeNames[code]] = code;
  m.attr("DTYPE_CODES") = codes;
}

}  // namespace bind
}  // namespace fastral
