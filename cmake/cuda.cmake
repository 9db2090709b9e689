# The optional CUDA backend (issue 8): src/cuda/ into camserve_core.
#
#   -DCS_CUDA=AUTO (default)  build it when nvcc, cudnn.h, libcudnn and cuBLAS
#                             are found under CUDAToolkit_ROOT (default
#                             /usr/local/cuda); else a CPU-only build
#   -DCS_CUDA=ON              the same, but a missing piece is an error
#   -DCS_CUDA=OFF             CPU only
#
# Included once at the end of CMakeLists.txt, after camserve_core and the
# tests exist.  src/cuda/cuda_info.c (include/camserve/cuda.h) is compiled
# in every build: without CUDA it answers "built without CUDA support".
# With CUDA, the host sources (src/cuda/*.c, plain C11 against the C APIs of
# the runtime, cuDNN and cuBLAS) compile with the project's flags; the
# kernels (src/cuda/*.cu) compile in an object library whose options are
# nvcc's own, because the project's -Wall/-Wshadow/-fsanitize are host
# compiler flags nvcc rejects.  Architectures: sm_90 code plus compute_90
# PTX, so Hopper runs native code and newer GPUs JIT the PTX (CUDA 13 has no
# target below sm_75); one nvcc pass per .cu file keeps CI's compile short.

set(CS_CUDA AUTO CACHE STRING "CUDA backend: AUTO, ON or OFF")
set_property(CACHE CS_CUDA PROPERTY STRINGS AUTO ON OFF)
target_sources(camserve_core PRIVATE ${CMAKE_SOURCE_DIR}/src/cuda/cuda_info.c)
set(CS_HAVE_CUDA OFF)

if(CS_CUDA STREQUAL "OFF")
  message(STATUS "CUDA backend: off (CS_CUDA=OFF)")
elseif(CS_FUZZ AND CS_CUDA STREQUAL "AUTO")
  # the fuzzers exercise parsers; a GPU backend adds nothing but nvcc time
  message(STATUS "CUDA backend: off (CS_FUZZ build; -DCS_CUDA=ON to force)")
else()
  if(DEFINED CUDAToolkit_ROOT)
    set(_cs_cuda_root ${CUDAToolkit_ROOT})
  elseif(DEFINED ENV{CUDAToolkit_ROOT})
    set(_cs_cuda_root $ENV{CUDAToolkit_ROOT})
  else()
    set(_cs_cuda_root /usr/local/cuda)
  endif()
  find_program(CS_NVCC nvcc HINTS ${_cs_cuda_root}/bin NO_DEFAULT_PATH)
  find_path(CS_CUDNN_INCLUDE cudnn.h HINTS ${_cs_cuda_root}/include NO_DEFAULT_PATH)
  find_path(CS_CUBLAS_INCLUDE cublas_v2.h HINTS ${_cs_cuda_root}/include NO_DEFAULT_PATH)
  find_library(CS_CUDNN_LIB cudnn HINTS ${_cs_cuda_root}/lib64 ${_cs_cuda_root}/lib NO_DEFAULT_PATH)
  set(_cs_missing)
  foreach(v CS_NVCC CS_CUDNN_INCLUDE CS_CUBLAS_INCLUDE CS_CUDNN_LIB)
    if(NOT ${v})
      list(APPEND _cs_missing ${v})
    endif()
  endforeach()
  if(_cs_missing)
    if(CS_CUDA STREQUAL "ON")
      message(FATAL_ERROR "CS_CUDA=ON but not found under ${_cs_cuda_root}: ${_cs_missing}")
    endif()
    message(STATUS "CUDA backend: off (not found under ${_cs_cuda_root}: ${_cs_missing})")
  else()
    set(CS_HAVE_CUDA ON)
  endif()
endif()

if(CS_HAVE_CUDA)
  set(CMAKE_CUDA_COMPILER ${CS_NVCC})
  set(CUDAToolkit_ROOT ${_cs_cuda_root})
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90) # = sm_90 SASS + compute_90 PTX
  endif()
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  if(CUDAToolkit_VERSION VERSION_LESS 12)
    message(FATAL_ERROR "the CUDA backend needs CUDA >= 12, found ${CUDAToolkit_VERSION}")
  endif()
  # targets made before enable_language(CUDA) link CUDA objects too and
  # need the property CMake gives only to later ones
  get_property(_cs_targets DIRECTORY ${CMAKE_SOURCE_DIR} PROPERTY BUILDSYSTEM_TARGETS)
  foreach(t ${_cs_targets})
    get_target_property(_cs_type ${t} TYPE)
    if(NOT _cs_type STREQUAL "INTERFACE_LIBRARY")
      set_property(TARGET ${t} PROPERTY CUDA_ARCHITECTURES ${CMAKE_CUDA_ARCHITECTURES})
    endif()
  endforeach()
  message(STATUS "CUDA backend: on (CUDA ${CUDAToolkit_VERSION}, ${CS_CUDNN_LIB}, arch ${CMAKE_CUDA_ARCHITECTURES})")

  file(GLOB _cs_cu CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/cuda/*.cu)
  add_library(cs_cuda_kernels OBJECT ${_cs_cu})
  set_property(TARGET cs_cuda_kernels PROPERTY COMPILE_OPTIONS
    -O3 $<$<BOOL:${CS_WERROR}>:-Werror=all-warnings> -Xcompiler=-Wall,-Wextra,-Wno-unused-parameter
    $<$<BOOL:${CS_WERROR}>:-Xcompiler=-Werror>)
  set_property(TARGET cs_cuda_kernels PROPERTY POSITION_INDEPENDENT_CODE ON)
  target_include_directories(cs_cuda_kernels PRIVATE ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/include)

  file(GLOB _cs_cuda_c CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/cuda/*.c)
  list(REMOVE_ITEM _cs_cuda_c ${CMAKE_SOURCE_DIR}/src/cuda/cuda_info.c)
  target_sources(camserve_core PRIVATE ${_cs_cuda_c} $<TARGET_OBJECTS:cs_cuda_kernels>)
  target_include_directories(camserve_core PRIVATE ${CS_CUDNN_INCLUDE})
  target_compile_definitions(camserve_core PUBLIC CS_HAVE_CUDA)
  # cuBLAS is not linked: src/cuda/cublas_lazy.c loads it on first use (its
  # libcublasLt made every start of the binary ~110 ms slower)
  target_link_libraries(camserve_core PUBLIC CUDA::cudart ${CS_CUDNN_LIB} ${CMAKE_DL_LIBS})

  # The CLI scripts check CPU numbers at CPU tolerances; on a GPU machine
  # "auto" would move them to the GPU, which test_cuda checks instead.
  get_property(_cs_tests DIRECTORY ${CMAKE_SOURCE_DIR} PROPERTY TESTS)
  foreach(t ${_cs_tests})
    if(t MATCHES "^cli/")
      set_property(TEST ${t} APPEND PROPERTY ENVIRONMENT CAMSERVE_DEVICE=cpu)
    endif()
  endforeach()

  # The GPU parity test skips (77) where no GPU is usable; its host-side
  # checks (layouts, fp16 rounding, walks) run everywhere as test_cuda_host.
  if(TARGET test_cuda)
    set_tests_properties(unit/test_cuda PROPERTIES LABELS gpu SKIP_RETURN_CODE 77)
    add_test(NAME unit/test_cuda_host COMMAND test_cuda --host-only WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
    set_tests_properties(unit/test_cuda_host PROPERTIES LABELS unit)
  endif()
elseif(TARGET test_cuda)
  set_tests_properties(unit/test_cuda PROPERTIES LABELS gpu SKIP_RETURN_CODE 77)
endif()
# The backend on the CPU with emulated CUDA/cuDNN/cuBLAS (tests/unit/
# test_cuda_emul.c): a unit test where CUDA is built, skipped (77) elsewhere.
# Its GPU image path loads tests/unit/fake_nvjpeg.c as libnvjpeg.
if(TARGET test_cuda_emul)
  set_tests_properties(unit/test_cuda_emul PROPERTIES SKIP_RETURN_CODE 77)
  if(CS_HAVE_CUDA)
    add_library(fake_nvjpeg MODULE ${CMAKE_SOURCE_DIR}/tests/unit/fake_nvjpeg.c)
    target_link_libraries(fake_nvjpeg PRIVATE PkgConfig::TURBOJPEG)
    add_dependencies(test_cuda_emul fake_nvjpeg)
    target_compile_definitions(test_cuda_emul PRIVATE CS_FAKE_NVJPEG="$<TARGET_FILE:fake_nvjpeg>")
    # emul_gpuprep_cli: the CLI's image reader (cli_pool) on the emulated GPU
    target_sources(test_cuda_emul PRIVATE ${CMAKE_SOURCE_DIR}/src/cli/images.c ${CMAKE_SOURCE_DIR}/src/cli/input.c
                   ${CMAKE_SOURCE_DIR}/src/cli/model_arg.c ${CMAKE_SOURCE_DIR}/src/cli/util.c)
  endif()
endif()
