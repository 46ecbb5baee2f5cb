# `cmake --install build --prefix P`: the library, its public headers, a CMake package
# (find_package(peft) -> peft::peft) and a pkg-config file (peft.pc). LibTorch is not
# installed: the package records the torch folder it was built against (PEFT_TORCH_DIR,
# the venv's wheel) and links it from there; a consumer may point PEFT_TORCH_DIR elsewhere.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(PEFT_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/peft)
set(_peft_libs peft peft_safetensors_header peft_gguf peft_jinja)

# The libraries name `include` relative to the source tree; installed, it is the prefix's.
foreach(t IN LISTS _peft_libs)
  set_property(TARGET ${t} PROPERTY INTERFACE_INCLUDE_DIRECTORIES
               "$<BUILD_INTERFACE:${CMAKE_SOURCE_DIR}/include>" "$<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>")
endforeach()
target_compile_features(peft INTERFACE cxx_std_20)  # LibTorch's headers need it
set_target_properties(peft_safetensors_header PROPERTIES EXPORT_NAME safetensors_header)
set_target_properties(peft_gguf PROPERTIES EXPORT_NAME gguf)
set_target_properties(peft_jinja PROPERTIES EXPORT_NAME jinja)
set_target_properties(peft_torch PROPERTIES EXPORT_NAME torch)

# LibTorch's paths lie inside the source tree (.venv), which an export may not name: in the
# build they stay, installed they are filled in by peftConfig.cmake from PEFT_TORCH_DIR.
foreach(prop INTERFACE_INCLUDE_DIRECTORIES INTERFACE_SYSTEM_INCLUDE_DIRECTORIES INTERFACE_LINK_LIBRARIES)
  get_target_property(_v peft_torch ${prop})
  if(_v)
    list(TRANSFORM _v PREPEND "$<BUILD_INTERFACE:")
    list(TRANSFORM _v APPEND ">")
    set_property(TARGET peft_torch PROPERTY ${prop} "${_v}")
  endif()
endforeach()

install(TARGETS ${_peft_libs} peft_torch EXPORT peftTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY include/peft DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")
install(EXPORT peftTargets NAMESPACE peft:: DESTINATION ${PEFT_INSTALL_CMAKEDIR})

# The `peft` command, finding the installed library beside it.
set_target_properties(peft_cli PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR};${PEFT_TORCH_DIR}/lib")
install(TARGETS peft_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
if(TARGET peft_cuda)  # opened at run time from the library's folder, so installed beside it
  install(TARGETS peft_cuda LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()
if(TARGET peft_nccl)  # likewise
  install(TARGETS peft_nccl LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()

configure_package_config_file(cmake/peftConfig.cmake.in ${CMAKE_BINARY_DIR}/peftConfig.cmake
                              INSTALL_DESTINATION ${PEFT_INSTALL_CMAKEDIR})
write_basic_package_version_file(${CMAKE_BINARY_DIR}/peftConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/peftConfig.cmake ${CMAKE_BINARY_DIR}/peftConfigVersion.cmake
        DESTINATION ${PEFT_INSTALL_CMAKEDIR})

# pkg-config: the prefix is found from the .pc file's own place, so the install may move.
file(RELATIVE_PATH PEFT_PC_TO_PREFIX "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
string(REGEX REPLACE "/$" "" PEFT_PC_TO_PREFIX "${PEFT_PC_TO_PREFIX}")
configure_file(cmake/peft.pc.in ${CMAKE_BINARY_DIR}/peft.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/peft.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
