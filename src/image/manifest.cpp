// Manifest (de)serialisation and host-compatibility rules.
#include "image/manifest.h"

#include <sys/utsname.h>

#include <nlohmann/json.hpp>

#include "base/base64.h"
#include "base/fs.h"
#include "base/utf8.h"

namespace prewarm::image {
namespace {

using nlohmann::json;

json host_json(const HostFacts& h) {
  return {{"kernel", h.kernel},
          {"arch", h.arch},
          {"cpuModel", h.cpu_model},
          {"criuVersion", h.criu_version},
          {"runcVersion", h.runc_version}};
}

template <class T>
Result<T> field(const json& j, const char* name, const std::string& where) {
  if (!j.contains(name)) return Error(where + name + ": missing");
  try {
    const json& v = j.at(name);
    // json's get<integer>() of a float beyond the integer's range is undefined behaviour.
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
      if (!v.is_number_integer() || (std::is_unsigned_v<T> && !v.is_number_unsigned()))
        return Error(where + name + ": wrong type");
    return v.get<T>();
  } catch (const json::exception&) {
    return Error(where + name + ": wrong type");
  }
}

bool is_sha256_digest(const std::string& d) {
  return d.size() == 71 && d.starts_with("sha256:") &&
         d.find_first_not_of("0123456789abcdef", 7) == std::string::npos;
}

std::string major_minor(const std::string& v) {
  auto first = v.find('.');
  if (first == std::string::npos) return v;
  auto second = v.find('.', first + 1);
  return v.substr(0, second);
}

}  // namespace

std::string to_json(const Manifest& m) {
  json files = json::array();
  for (const auto& f : m.files)
    files.push_back({{"path", f.path}, {"size", f.size}, {"sha256", f.sha256}});
  json rootfs = {{"id", m.rootfs_id}, {"dir", m.rootfs_dir}};
  if (m.rootfs_image)
    rootfs["image"] = {{"reference", m.rootfs_image->reference},
                       {"manifestDigest", m.rootfs_image->manifest_digest},
                       {"configDigest", m.rootfs_image->config_digest}};
  json spec_files = json::array();
  for (const auto& f : m.spec_files) {
    json e = {{"path", f.path}, {"mode", f.mode}};
    const std::string content = f.content.value_or("");
    // JSON text is UTF-8: other bytes go as base64.
    if (valid_utf8(content)) e["content"] = content;
    else e["contentBase64"] = base64_encode(content);
    spec_files.push_back(std::move(e));
  }
  json j = {{"magic", m.magic},
            {"formatVersion", m.format_version},
            {"name", m.name},
            {"created", m.created},
            {"spec", m.spec_yaml},
            {"specFiles", spec_files},
            {"rootfs", rootfs},
            {"host", host_json(m.host)},
            {"tcpEstablished", m.tcp_established},
            {"timingsSeconds", m.timings_s},
            {"files", files}};
  return j.dump(2) + "\n";
}

Result<Manifest> parse_manifest(std::string_view text) {
  if (text.size() > kMaxManifestBytes) return Error("manifest: larger than 16 MiB");
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Error("manifest: not valid JSON");
  Manifest m;
  PW_ASSIGN(m.magic, field<std::string>(j, "magic", "manifest."));
  if (m.magic != kManifestMagic) return Error("manifest.magic: not a prewarm checkpoint image");
  PW_ASSIGN(m.format_version, field<int>(j, "formatVersion", "manifest."));
  if (m.format_version != 1 && m.format_version != kFormatVersion)
    return Error("manifest.formatVersion: " + std::to_string(m.format_version) +
                 " is not supported (this prewarm reads versions 1 to " +
                 std::to_string(kFormatVersion) + "); bake the image again");
  PW_ASSIGN(m.name, field<std::string>(j, "name", "manifest."));
  PW_ASSIGN(m.created, field<std::string>(j, "created", "manifest."));
  PW_ASSIGN(m.spec_yaml, field<std::string>(j, "spec", "manifest."));
  if (m.format_version >= 2) {
    PW_ASSIGN(json spec_files, field<json>(j, "specFiles", "manifest."));
    if (!spec_files.is_array()) return Error("manifest.specFiles: not a list");
    for (size_t i = 0; i < spec_files.size(); ++i) {
      const std::string where = "manifest.specFiles[" + std::to_string(i) + "].";
      const json& e = spec_files[i];
      spec::FileEntry f;
      PW_ASSIGN(f.path, field<std::string>(e, "path", where));
      PW_ASSIGN(f.mode, field<unsigned>(e, "mode", where));
      if (e.contains("content") == e.contains("contentBase64"))
        return Error(where + "content: exactly one of content, contentBase64 is required");
      if (e.contains("content")) {
        PW_ASSIGN(f.content, field<std::string>(e, "content", where));
      } else {
        PW_ASSIGN(std::string coded, field<std::string>(e, "contentBase64", where));
        f.content = base64_decode(coded);
        if (!f.content) return Error(where + "contentBase64: not base64");
      }
      m.spec_files.push_back(std::move(f));
    }
  }
  PW_ASSIGN(json rootfs, field<json>(j, "rootfs", "manifest."));
  PW_ASSIGN(m.rootfs_id, field<std::string>(rootfs, "id", "manifest.rootfs."));
  PW_ASSIGN(m.rootfs_dir, field<std::string>(rootfs, "dir", "manifest.rootfs."));
  if (rootfs.contains("image")) {
    PW_ASSIGN(json img, field<json>(rootfs, "image", "manifest.rootfs."));
    const std::string where = "manifest.rootfs.image.";
    RootfsImage ri;
    PW_ASSIGN(ri.reference, field<std::string>(img, "reference", where));
    PW_ASSIGN(ri.manifest_digest, field<std::string>(img, "manifestDigest", where));
    PW_ASSIGN(ri.config_digest, field<std::string>(img, "configDigest", where));
    for (const std::string* d : {&ri.manifest_digest, &ri.config_digest})
      if (!is_sha256_digest(*d))
        return Error(where + (d == &ri.manifest_digest ? "manifestDigest" : "configDigest") +
                     ": not sha256:<64 lowercase hex>");
    if (m.rootfs_id != "image:" + ri.manifest_digest)
      return Error(where + "manifestDigest: " + ri.manifest_digest +
                   " does not name the base manifest.rootfs.id (" + m.rootfs_id + ")");
    m.rootfs_image = std::move(ri);
  }
  PW_ASSIGN(json host, field<json>(j, "host", "manifest."));
  PW_ASSIGN(m.host.kernel, field<std::string>(host, "kernel", "manifest.host."));
  PW_ASSIGN(m.host.arch, field<std::string>(host, "arch", "manifest.host."));
  PW_ASSIGN(m.host.cpu_model, field<std::string>(host, "cpuModel", "manifest.host."));
  PW_ASSIGN(m.host.criu_version, field<std::string>(host, "criuVersion", "manifest.host."));
  PW_ASSIGN(m.host.runc_version, field<std::string>(host, "runcVersion", "manifest.host."));
  PW_ASSIGN(m.tcp_established, field<bool>(j, "tcpEstablished", "manifest."));
  PW_ASSIGN(m.timings_s, (field<std::map<std::string, double>>(j, "timingsSeconds", "manifest.")));
  PW_ASSIGN(json files, field<json>(j, "files", "manifest."));
  if (!files.is_array()) return Error("manifest.files: not a list");
  for (size_t i = 0; i < files.size(); ++i) {
    std::string where = "manifest.files[" + std::to_string(i) + "].";
    FileDigest f;
    PW_ASSIGN(f.path, field<std::string>(files[i], "path", where));
    PW_ASSIGN(f.size, field<uint64_t>(files[i], "size", where));
    PW_ASSIGN(f.sha256, field<std::string>(files[i], "sha256", where));
    if (f.path.empty() || f.path.front() == '/' || f.path.find("..") != std::string::npos)
      return Error(where + "path: " + f.path + " is not a plain relative path");
    if (f.sha256.size() != 64) return Error(where + "sha256: not a SHA-256 digest");
    m.files.push_back(std::move(f));
  }
  return m;
}

Result<spec::AppSpec> stored_spec(const Manifest& m) {
  return spec::parse_spec_with_files(m.spec_yaml, m.spec_files, "manifest.specFiles");
}

HostFacts current_host_facts(std::string criu_version, std::string runc_version) {
  HostFacts h;
  utsname u{};
  if (::uname(&u) == 0) {
    h.kernel = u.release;
    h.arch = u.machine;
  }
  if (auto info = fs::read_file("/proc/cpuinfo"); info.ok()) {
    auto pos = info->find("model name");
    if (pos != std::string::npos) {
      auto colon = info->find(':', pos);
      auto nl = info->find('\n', pos);
      if (colon != std::string::npos && colon < nl) h.cpu_model = info->substr(colon + 2, nl - colon - 2);
    }
  }
  h.criu_version = std::move(criu_version);
  h.runc_version = std::move(runc_version);
  return h;
}

std::string incompatibility(const HostFacts& baked, const HostFacts& here) {
  if (baked.arch != here.arch)
    return "checkpoint was made on " + baked.arch + ", this host is " + here.arch;
  if (major_minor(baked.criu_version) != major_minor(here.criu_version))
    return "checkpoint was made with CRIU " + baked.criu_version + ", this host has CRIU " +
           here.criu_version;
  return {};
}

}  // namespace prewarm::image
