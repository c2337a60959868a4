# bridge_embed_file(TARGET FILE NAMESPACE FUNCTION): compiles FILE (a web
# page) into TARGET as `absl::string_view NAMESPACE::FUNCTION()`, so that a
# binary serves it with no file to install and no build step for the page.
# Editing FILE re-runs cmake (CMAKE_CONFIGURE_DEPENDS), which regenerates it.
function(bridge_embed_file target file namespace function)
  get_filename_component(path ${file} ABSOLUTE)
  file(READ ${path} content)
  string(FIND "${content}" ")EMBED\"" clash)
  if(NOT clash EQUAL -1)
    message(FATAL_ERROR "${file} contains the raw-string terminator )EMBED\"")
  endif()
  get_filename_component(name ${file} NAME)
  set(out ${CMAKE_CURRENT_BINARY_DIR}/embedded_${function}.cc)
  file(CONFIGURE OUTPUT ${out} CONTENT "// Generated from ${name} by cmake/EmbedFile.cmake: edit that file.
#include \"absl/strings/string_view.h\"
namespace ${namespace} {
absl::string_view ${function}() {
  static constexpr char kFile[] = R\"EMBED(@content@)EMBED\";
  return absl::string_view(kFile, sizeof(kFile) - 1);
}
}  // namespace ${namespace}
" @ONLY)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${path})
  target_sources(${target} PRIVATE ${out})
endfunction()
