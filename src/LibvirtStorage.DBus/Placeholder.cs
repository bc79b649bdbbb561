namespace LibvirtStorage.DBus;
