# citrus_add_library(<area> <source>...): one Citrus library, the same way for every area.
# - target citrus_<area>, alias citrus::<area>, exported as citrus::<area> and as the component <area>
#   of find_package(Citrus COMPONENTS ...);
# - static by default; shared, with a SONAME of libcitrus_<area>.so.<major>.<minor>, when
#   BUILD_SHARED_LIBS is ON (before 1.0 every minor version may change the ABI);
# - public headers under <area>/include installed; a pkg-config file citrus-<area>.pc
#   (CITRUS_PC_REQUIRES: Citrus areas it builds on; CITRUS_PC_PRIVATE: pkg-config modules and
#   CITRUS_PC_LIBS_PRIVATE: flags a static link also needs — set them before the call).
function(citrus_add_library area)
  add_library(citrus_${area} ${ARGN})
  add_library(citrus::${area} ALIAS citrus_${area})
  set_target_properties(citrus_${area} PROPERTIES
    EXPORT_NAME ${area} OUTPUT_NAME citrus_${area}
    VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
  target_include_directories(citrus_${area} PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  citrus_target_defaults(citrus_${area})
  install(TARGETS citrus_${area} EXPORT CitrusTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  install(DIRECTORY include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

  set(CITRUS_PC_AREA ${area})
  set(requires "")
  foreach(dep IN LISTS CITRUS_PC_REQUIRES)
    string(APPEND requires " citrus-${dep} = ${PROJECT_VERSION}")
  endforeach()
  string(STRIP "${requires}" CITRUS_PC_REQUIRES_TEXT)
  list(JOIN CITRUS_PC_PRIVATE " " CITRUS_PC_PRIVATE_TEXT)
  list(JOIN CITRUS_PC_LIBS_PRIVATE " " CITRUS_PC_LIBS_PRIVATE_TEXT)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/citrus.pc.in ${PROJECT_BINARY_DIR}/pkgconfig/citrus-${area}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/pkgconfig/citrus-${area}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
  set_property(GLOBAL APPEND PROPERTY CITRUS_COMPONENTS ${area})
endfunction()
