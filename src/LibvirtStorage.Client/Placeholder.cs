namespace LibvirtStorage.Client;
