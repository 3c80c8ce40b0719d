# citrus_target_defaults(<target>): the project's warning and sanitizer settings, per target (never global).
function(citrus_target_defaults target)
  target_compile_features(${target} PUBLIC cxx_std_17)
  set_target_properties(${target} PROPERTIES CXX_EXTENSIONS OFF POSITION_INDEPENDENT_CODE ON)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion
                                           $<$<BOOL:${CITRUS_WERROR}>:-Werror>)
  if(CITRUS_SANITIZE)  # float-cast-overflow: GCC leaves it out of "undefined" (clang includes it)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer
                                             -fno-sanitize-recover=all)
    target_link_options(${target} PUBLIC $<BUILD_INTERFACE:-fsanitize=address,undefined,float-cast-overflow>)
  endif()
  if(CITRUS_FUZZ)  # libFuzzer coverage + ASan/UBSan; tests/fuzz links the targets with -fsanitize=fuzzer
    target_compile_options(${target} PRIVATE -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
                                             -fno-sanitize-recover=all)
    target_link_options(${target} PUBLIC $<BUILD_INTERFACE:-fsanitize=address,undefined>)
  endif()
endfunction()
