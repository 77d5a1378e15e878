# The backend ABI version (backend.h kBackendAbiVersion), derived from the headers that the CPU
# addon and the separately built CUDA library share, so that a change to any of them changes it
# without anyone bumping a number: the first 15 hex digits of SHA-256 over the concatenated
# SHA-256 digests of the files below, in this order. scripts/abi-hash.js computes the same
# value for node-gyp (binding.gyp) and the tests. Both CMake projects include this file and
# re-run their configure step when one of the headers changes.
set(_RESNEXT_CORE_DIR "${CMAKE_CURRENT_LIST_DIR}")
set(RESNEXT_BACKEND_ABI_HEADERS backend.h ops.h tensor.h dtype.h error.h)

function(resnext_backend_abi out_var)
  set(_all "")
  foreach(_h ${RESNEXT_BACKEND_ABI_HEADERS})
    file(SHA256 "${_RESNEXT_CORE_DIR}/${_h}" _d)
    string(APPEND _all "${_d}")
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${_RESNEXT_CORE_DIR}/${_h}")
  endforeach()
  string(SHA256 _abi "${_all}")
  string(SUBSTRING "${_abi}" 0 15 _abi)
  set(${out_var} "0x${_abi}" PARENT_SCOPE)
endfunction()
