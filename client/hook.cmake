# vpmu's libvirt hook: the decision logic (client/hook.c) as a library that
# tests/test_hook.c links, and the executable libvirt runs.
# Included from the end of the top-level CMakeLists.txt.

add_library(vpmuhook STATIC ${CMAKE_SOURCE_DIR}/client/hook.c)
target_include_directories(vpmuhook PUBLIC ${CMAKE_SOURCE_DIR}/client)
target_link_libraries(vpmuhook PUBLIC vpmucore)

add_executable(vpmu-libvirt-hook ${CMAKE_SOURCE_DIR}/client/hook_main.c)
target_link_libraries(vpmu-libvirt-hook PRIVATE vpmuhook vpmuclient)
# The hook needs only libxml2 (domain XML) and json-c (the socket protocol)
# from vpmucore's dependencies; do not make every VM start load libvirt,
# libperf or libsystemd for nothing.
target_link_options(vpmu-libvirt-hook PRIVATE -Wl,--as-needed)
# libvirt only runs hooks from /etc/libvirt/hooks/qemu.d/; docs/libvirt.md
# says how to link it there (a packaging decision, not the build's).
install(TARGETS vpmu-libvirt-hook DESTINATION ${CMAKE_INSTALL_LIBEXECDIR}/vpmu)

if(TARGET test_hook)
  target_link_libraries(test_hook PRIVATE vpmuhook)
endif()
