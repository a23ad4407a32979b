"""The exftp benchmark against pyftpdlib and vsftpd: run C{python3 bench/run.py}."""
