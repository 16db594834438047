# The journal catalog for vpmud's MESSAGE_IDs (docs/logging.md). The
# directory comes from systemd's pkg-config file, as the unit directory
# does; journalctl --update-catalog (run by the systemd package's trigger on
# Debian) compiles it into the journal's database.
pkg_get_variable(VPMU_CATALOGDIR systemd catalogdir)
if(NOT VPMU_CATALOGDIR)
  # relative: follows the prefix, also one given at install time
  set(VPMU_CATALOGDIR lib/systemd/catalog)
endif()
set(VPMU_CATALOGDIR ${VPMU_CATALOGDIR} CACHE PATH "Where journal catalogs are installed")
install(FILES vpmu.catalog DESTINATION ${VPMU_CATALOGDIR})
