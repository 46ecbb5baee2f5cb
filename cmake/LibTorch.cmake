# LibTorch from the torch wheel in the project's virtualenv (or PEFT_TORCH_DIR).
#
# We do not use the wheel's TorchConfig.cmake: when the wheel is a CUDA build it insists
# on finding a matching CUDA toolkit and cuDNN at configure time, which we neither need
# nor can promise on a CPU machine. The wheel's headers and shared libraries are all a
# C++ consumer needs; its libraries carry RPATHs to the NVIDIA wheels beside them.
if(NOT PEFT_TORCH_DIR)
  execute_process(
    COMMAND ${PEFT_PYTHON} -c "import torch,os;print(os.path.dirname(torch.__file__))"
    OUTPUT_VARIABLE _torch_dir OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "torch not importable with ${PEFT_PYTHON}; run scripts/setup.sh "
                        "or pass -DPEFT_TORCH_DIR=<site-packages>/torch")
  endif()
  set(PEFT_TORCH_DIR ${_torch_dir} CACHE PATH "torch package folder (holds include/ and lib/)")
endif()
execute_process(
  COMMAND ${PEFT_PYTHON} -c "import torch;print(int(torch._C._GLIBCXX_USE_CXX11_ABI))"
  OUTPUT_VARIABLE PEFT_TORCH_CXX11_ABI OUTPUT_STRIP_TRAILING_WHITESPACE)
if(PEFT_TORCH_CXX11_ABI STREQUAL "")
  set(PEFT_TORCH_CXX11_ABI 1)
endif()

set(_lib ${PEFT_TORCH_DIR}/lib)
add_library(peft_torch INTERFACE)
target_include_directories(peft_torch SYSTEM INTERFACE
  ${PEFT_TORCH_DIR}/include ${PEFT_TORCH_DIR}/include/torch/csrc/api/include)
target_compile_definitions(peft_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=${PEFT_TORCH_CXX11_ABI})
set(_libs ${_lib}/libtorch_cpu.so ${_lib}/libc10.so)
if(EXISTS ${_lib}/libtorch_cuda.so)
  # Not linked: src/util/cuda_backend.cpp opens libtorch_cuda when a CUDA device is first
  # asked for (linking it loads a dozen NVIDIA libraries into every CPU run).
  set(PEFT_TORCH_HAS_CUDA ON)
endif()
target_link_libraries(peft_torch INTERFACE ${_libs} ${_lib}/libtorch.so)
# ATen's parallel_for is a header template whose threads exist only where the including
# source is compiled with OpenMP (_OPENMP); without it every chunk runs on the calling
# thread. Our sources that call it compile with -fopenmp and link the runtime the wheel
# ships and libtorch_cpu already loads, so one thread pool serves both.
if(EXISTS ${_lib}/libgomp.so.1)
  set(PEFT_OPENMP_LIB ${_lib}/libgomp.so.1)
else()
  find_package(OpenMP REQUIRED COMPONENTS CXX)
  set(PEFT_OPENMP_LIB OpenMP::OpenMP_CXX)
endif()
set(CMAKE_BUILD_RPATH ${_lib})
set(CMAKE_INSTALL_RPATH ${_lib})
message(STATUS "LibTorch: ${PEFT_TORCH_DIR} (cxx11 abi ${PEFT_TORCH_CXX11_ABI}, cuda ${PEFT_TORCH_HAS_CUDA})")
