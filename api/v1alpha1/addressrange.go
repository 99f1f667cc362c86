package v1alpha1

// AddressRange is a CIDR ("172.31.10.0/24", "fd31:0:0:10::/64") or an inclusive range of one
// family ("172.31.10.10-172.31.10.20"). The API server checks the syntax. CEL cannot order
// addresses, so a range's ends are compared as strings after every group is zero-padded (and
// IPv6 "::" expanded), which makes string order address order.
//
// +kubebuilder:validation:MinLength=3
// +kubebuilder:validation:MaxLength=90
// +kubebuilder:validation:XValidation:rule="self.contains('-') || isCIDR(self)",message="must be a CIDR such as 172.31.10.0/24 or a range such as 172.31.10.10-172.31.10.20"
// +kubebuilder:validation:XValidation:rule="self.contains('-') || !isCIDR(self) || cidr(self) == cidr(self).masked()",messageExpression="'CIDR ' + self + ' has host bits set; did you mean ' + string(cidr(self).masked()) + '?'"
// +kubebuilder:validation:XValidation:rule="!self.contains('-') || [self.split('-')].all(p, p.size() == 2 && isIP(p[0]) && isIP(p[1]))",message="a range must be two addresses joined by '-', such as 172.31.10.10-172.31.10.20"
// +kubebuilder:validation:XValidation:rule="!self.contains('-') || [self.split('-')].all(p, p.size() != 2 || !isIP(p[0]) || !isIP(p[1]) || ip(p[0]).family() == ip(p[1]).family())",message="both ends of a range must be of the same family"
// +kubebuilder:validation:XValidation:rule="!self.contains('-') || [self.split('-')].all(p, p.size() != 2 || !isIP(p[0]) || !isIP(p[1]) || ip(p[0]).family() != 4 || ip(p[1]).family() != 4 || [p.map(a, a.split('.').map(o, ('000' + o).substring(o.size())).join('.'))].all(e, e[0] <= e[1]))",message="the first address of a range must not be greater than the last"
// +kubebuilder:validation:XValidation:rule="!self.contains('-') || [self.split('-')].all(p, p.size() != 2 || !isIP(p[0]) || !isIP(p[1]) || ip(p[0]).family() != 6 || ip(p[1]).family() != 6 || self.contains('.') || [p.map(a, a.lowerAscii()).map(a, (a.contains('::') ? a.split('::')[0].split(':').filter(g, g != ”) + [1, 2, 3, 4, 5, 6, 7, 8].filter(i, i <= 8 - a.split('::')[0].split(':').filter(g, g != ”).size() - a.split('::')[1].split(':').filter(g, g != ”).size()).map(i, '0') + a.split('::')[1].split(':').filter(g, g != ”) : a.split(':')).map(g, ('0000' + g).substring(g.size())).join(':'))].all(e, e[0] <= e[1]))",message="the first address of a range must not be greater than the last"
type AddressRange string
