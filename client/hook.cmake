# vpmu's libvirt hook: the decision logic (client/hook.c) as a library that
# tests/test_hook.c links, and the executable libvirt runs.
# Included from the end of the top-level CMakeLists.txt.

add_library(vpmuhook STATIC ${CMAKE_SOURCE_DIR}/client/hook.c)
target_include_directories(vpmuhook PUBLIC ${CMAKE_SOURCE_DIR}/client)
target_link_libraries(vpmuhook PUBLIC vpmu_proto)

add_executable(vpmu-libvirt-hook ${CMAKE_SOURCE_DIR}/client/hook_main.c)
target_link_libraries(vpmu-libvirt-hook PRIVATE vpmuhook vpmuclient)
# The hook needs only libxml2 (domain XML) and json-c (the socket protocol)
# from vpmucore's dependencies; do not make every VM start load libvirt,
# libperf or libsystemd for nothing.
target_link_options(vpmu-libvirt-hook PRIVATE -Wl,--as-needed)
# libvirt only runs hooks from /etc/libvirt/hooks/qemu.d/; docs/libvirt.md
# says how to link it there (a packaging decision, not the build's).
install(TARGETS vpmu-libvirt-hook DESTINATION ${CMAKE_INSTALL_LIBEXECDIR}/vpmu)
# Where libvirt (>= 6.5) runs every executable: a symlink to the program, so
# that upgrades of the program need no second copy. Off with
# -DVPMU_INSTALL_LIBVIRT_HOOK=OFF (e.g. hosts without libvirt).
option(VPMU_INSTALL_LIBVIRT_HOOK "Link the hook into /etc/libvirt/hooks/qemu.d" ON)
if(VPMU_INSTALL_LIBVIRT_HOOK)
  # Both ends are resolved when installing (VPMU_INSTALL_DIRS, top level):
  # with --prefix /usr the link is /etc/libvirt/hooks/qemu.d/vpmu ->
  # /usr/libexec/vpmu/vpmu-libvirt-hook, whichever step gave the prefix.
  string(CONFIGURE [[
    include("@VPMU_INSTALL_DIRS@")
    set(dir "$ENV{DESTDIR}${VPMU_INSTALL_FULL_SYSCONFDIR}/libvirt/hooks/qemu.d")
    set(target "${VPMU_INSTALL_FULL_LIBEXECDIR}/vpmu/vpmu-libvirt-hook")
    file(MAKE_DIRECTORY "${dir}")
    file(CREATE_LINK "${target}" "${dir}/vpmu" SYMBOLIC)
    list(APPEND CMAKE_INSTALL_MANIFEST_FILES "${dir}/vpmu")
    message(STATUS "Linking: ${dir}/vpmu -> ${target}")
  ]] code @ONLY)
  install(CODE "${code}")
endif()

if(TARGET test_hook)
  target_link_libraries(test_hook PRIVATE vpmuhook)
endif()
