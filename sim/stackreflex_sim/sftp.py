"""The SFTP subsystem of a simulated node, over its files (``node.files``): what
``ssh.open_sftp()`` reaches, so handlers fetch artefacts (``getfo``) as from a real sshd."""

import io
import os
import posixpath
import stat
import time

import paramiko
from paramiko.sftp import SFTP_FAILURE, SFTP_NO_SUCH_FILE, SFTP_OK


def _attributes(node, path: str, name: str = "") -> paramiko.SFTPAttributes | int:
    """The stat of ``path``: a file with its size and mode, a directory (made, or holding files)."""
    attr = paramiko.SFTPAttributes()
    attr.filename = name or posixpath.basename(path)
    attr.st_uid = attr.st_gid = 0
    attr.st_atime = attr.st_mtime = int(time.time())
    if path in node.files:
        attr.st_size, attr.st_mode = len(node.files[path]), stat.S_IFREG | node.modes.get(path, 0o644)
    elif path in node.directories():
        attr.st_size, attr.st_mode = 4096, stat.S_IFDIR | node.modes.get(path, 0o755)
    else:
        return SFTP_NO_SUCH_FILE
    return attr


class _Handle(paramiko.SFTPHandle):
    def __init__(self, node, path: str, flags: int, data: bytes):
        super().__init__(flags)
        self.node, self.path = node, path
        buffer = io.BytesIO(data)
        if flags & (os.O_WRONLY | os.O_RDWR):
            buffer.seek(0, io.SEEK_END)
            self.writefile = buffer
        if not flags & os.O_WRONLY:
            self.readfile = buffer

    def stat(self):
        if hasattr(self, "writefile"):
            attr = paramiko.SFTPAttributes()
            attr.st_size, attr.st_mode = len(self.writefile.getvalue()), stat.S_IFREG | 0o644
            return attr
        return _attributes(self.node, self.path)

    def chattr(self, attr):
        return SFTP_OK

    def close(self):
        if hasattr(self, "writefile"):
            with self.node.lock:
                self.node.files[self.path] = self.writefile.getvalue()
        super().close()


class SimSFTPServer(paramiko.SFTPServerInterface):
    """paramiko's SFTP server interface over one node's files; relative paths are the SSH user's home's."""

    def __init__(self, server, node, *args, **kwargs):
        super().__init__(server, *args, **kwargs)
        self.node = node

    def canonicalize(self, path):
        return posixpath.normpath(posixpath.join(f"/home/{self.node.user}", path))

    def stat(self, path):
        return _attributes(self.node, self.canonicalize(path))

    lstat = stat

    def list_folder(self, path):
        path = self.canonicalize(path)
        directories = self.node.directories()
        if path not in directories:
            return SFTP_NO_SUCH_FILE
        prefix = path.rstrip("/") + "/"
        names = {
            p[len(prefix) :].split("/")[0]
            for p in [*self.node.files, *directories]
            if p.startswith(prefix) and len(p) > len(prefix)
        }
        return [_attributes(self.node, prefix + name, name) for name in sorted(names)]

    def open(self, path, flags, attr):
        path = self.canonicalize(path)
        with self.node.lock:
            writing = flags & (os.O_WRONLY | os.O_RDWR)
            if path not in self.node.files:
                if not (writing and flags & os.O_CREAT) or posixpath.dirname(path) not in self.node.directories():
                    return SFTP_NO_SUCH_FILE
                self.node.files[path] = b""
                self.node.modes[path] = (attr.st_mode & 0o7777) if attr and attr.st_mode else 0o644
            data = b"" if writing and flags & os.O_TRUNC else self.node.files[path]
        return _Handle(self.node, path, flags, data)

    def remove(self, path):
        path = self.canonicalize(path)
        with self.node.lock:
            if path not in self.node.files:
                return SFTP_NO_SUCH_FILE
            del self.node.files[path]
            self.node.modes.pop(path, None)
        return SFTP_OK

    def rename(self, oldpath, newpath):
        oldpath, newpath = self.canonicalize(oldpath), self.canonicalize(newpath)
        with self.node.lock:
            if oldpath not in self.node.files:
                return SFTP_NO_SUCH_FILE
            self.node.files[newpath] = self.node.files.pop(oldpath)
        return SFTP_OK

    posix_rename = rename

    def mkdir(self, path, attr):
        path = self.canonicalize(path)
        with self.node.lock:
            directories = self.node.directories()
            if posixpath.dirname(path) not in directories:
                return SFTP_NO_SUCH_FILE
            if path in directories or path in self.node.files:
                return SFTP_FAILURE
            self.node.dirs.add(path)
            self.node.modes[path] = (attr.st_mode & 0o7777) if attr and attr.st_mode else 0o755
        return SFTP_OK

    def rmdir(self, path):
        path = self.canonicalize(path)
        with self.node.lock:
            if any(p.startswith(path + "/") for p in [*self.node.files, *self.node.dirs]):
                return SFTP_FAILURE  # not empty
            if path not in self.node.dirs:
                return SFTP_NO_SUCH_FILE
            self.node.dirs.discard(path)
        return SFTP_OK

    def chattr(self, path, attr):
        path = self.canonicalize(path)
        if path not in self.node.files and path not in self.node.directories():
            return SFTP_NO_SUCH_FILE
        if attr.st_mode is not None:
            self.node.modes[path] = attr.st_mode & 0o7777
        return SFTP_OK
