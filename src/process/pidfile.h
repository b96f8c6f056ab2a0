#pragma once

#include <sys/types.h>

#include <string>

namespace tidegate::process {

bool writePidFile(const std::string& path, pid_t pid, std::string* err);
// Removes the file only if it still names `pid` (a new master may own it).
void removePidFile(const std::string& path, pid_t pid);
// -1 with *err when missing or unreadable.
pid_t readPidFile(const std::string& path, std::string* err);

}  // namespace tidegate::process
