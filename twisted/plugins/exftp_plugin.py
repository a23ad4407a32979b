"""twistd plugin: C{twistd exftp}."""

from twisted.application.service import ServiceMaker

exftp = ServiceMaker("exftp", "exftp._tap", "An extendable FTP server with cloud storage and HTTP logins.", "exftp")
