# prewarm_module(NAME SOURCES ... DEPS ...): one static library prewarm::NAME per module.
function(prewarm_module name)
  cmake_parse_arguments(M "" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(prewarm_${name} STATIC ${M_SOURCES})
  add_library(prewarm::${name} ALIAS prewarm_${name})
  target_include_directories(prewarm_${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_compile_features(prewarm_${name} PUBLIC cxx_std_20)
  target_compile_options(prewarm_${name} PRIVATE -Wall -Wextra)
  target_link_libraries(prewarm_${name} PUBLIC ${M_PUBLIC_DEPS} PRIVATE ${M_PRIVATE_DEPS})
  prewarm_instrument(prewarm_${name})
endfunction()

# prewarm_instrument(TARGET): the sanitizer (and, for fuzzing, coverage) flags of a
# PREWARM_SANITIZE or PREWARM_FUZZ build, on every module, test and fuzz target of it.
function(prewarm_instrument target)
  if(NOT PREWARM_SANITIZE AND NOT PREWARM_FUZZ)
    return()
  endif()
  # -fno-sanitize-recover: UBSan stops at the first finding, as ASan does.
  set(san -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
  target_compile_options(${target} PRIVATE ${san})
  if(PREWARM_FUZZ)
    target_compile_options(${target} PRIVATE -fsanitize=fuzzer-no-link)
  endif()
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "EXECUTABLE")
    target_link_options(${target} PRIVATE ${san})
  endif()
endfunction()
